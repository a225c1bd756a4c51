"""The FastAPI application: routes, the one error shape, an upload size guard and request logs."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api import errors, logs, ratelimit
from api.inflight import InFlightCapMiddleware
from api.requestlog import GuardAndLogMiddleware
from api.routes import artifacts, datasets, events, health, jobs, models, workers
from api.settings import get_settings

DASHBOARD = Path(__file__).resolve().parent.parent / "frontend" / "dist"


def create_app() -> FastAPI:
    settings = get_settings()
    logs.configure(settings.log_level)
    app = FastAPI(title="sparsetune", version="0.1.0",
                  description="Sparse fine-tuning (SMT, SNELL) with LoRA/DoRA/full baselines, as a service.")
    errors.install(app)
    app.add_middleware(GuardAndLogMiddleware, max_upload_bytes=settings.max_upload_bytes)
    ratelimit.install(app, settings)  # a throttled request costs no database work
    app.add_middleware(InFlightCapMiddleware, max_in_flight=settings.max_in_flight)  # outermost: sheds first
    for module in (health, datasets, jobs, events, artifacts, models, workers):
        app.include_router(module.router)
    if DASHBOARD.is_dir():  # the built dashboard, if any, is served at / (it uses only the public API)
        app.mount("/", StaticFiles(directory=DASHBOARD, html=True), name="dashboard")
    return app


app = create_app()
