"""The FastAPI application: routes, the one error shape, an upload size guard and request logs."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from api import errors, logs, ratelimit
from api.routes import artifacts, datasets, events, health, jobs, models, workers
from api.settings import get_settings

log = logging.getLogger("sparsetune.api")
MULTIPART_SLACK = 64 * 1024  # boundaries and headers around the file part
DASHBOARD = Path(__file__).resolve().parent.parent / "frontend" / "dist"


def create_app() -> FastAPI:
    settings = get_settings()
    logs.configure(settings.log_level)
    app = FastAPI(title="sparsetune", version="0.1.0",
                  description="Sparse fine-tuning (SMT, SNELL) with LoRA/DoRA/full baselines, as a service.")
    errors.install(app)

    @app.middleware("http")
    async def guard_and_log(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_upload_bytes + MULTIPART_SLACK:
            body = errors.error_body(413, f"file: larger than the {settings.max_upload_bytes}-byte upload limit",
                                     "file")
            return JSONResponse(body, status_code=413, headers={"Connection": "close"})
        start = time.perf_counter()
        response = await call_next(request)
        log.info("request", extra={"method": request.method, "path": request.url.path,
                                   "status_code": response.status_code,
                                   "duration_ms": round((time.perf_counter() - start) * 1000, 1)})
        return response

    ratelimit.install(app, settings)  # outermost: a throttled request costs no database work
    for module in (health, datasets, jobs, events, artifacts, models, workers):
        app.include_router(module.router)
    if DASHBOARD.is_dir():  # the built dashboard, if any, is served at / (it uses only the public API)
        app.mount("/", StaticFiles(directory=DASHBOARD, html=True), name="dashboard")
    return app


app = create_app()
