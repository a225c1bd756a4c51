"""The FastAPI application: routes, the one error shape, an upload size guard and request logs."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api import errors, logs, ratelimit
from api.door import DoorMiddleware
from api.inflight import InFlightCapMiddleware
from api.requestlog import GuardAndLogMiddleware
from api.routes import artifacts, datasets, events, health, jobs, models, usage, workers
from api.security import KeyCache
from api.settings import get_settings

DASHBOARD = Path(__file__).resolve().parent.parent / "frontend" / "dist"


def create_app() -> FastAPI:
    settings = get_settings()
    logs.configure(settings.log_level)
    app = FastAPI(title="sparsetune", version="0.1.0",
                  description="Sparse fine-tuning (SMT, SNELL) with LoRA/DoRA/full baselines, as a service.")
    errors.install(app)
    # innermost first: body limits and timeouts and the request log; the in-flight cap, which so counts only
    # requests the door let in; the door (outermost): key check and rate limit before any body is read
    app.add_middleware(GuardAndLogMiddleware, max_upload_bytes=settings.max_upload_bytes,
                       max_body_bytes=settings.max_body_bytes, body_timeout=settings.body_timeout_seconds)
    app.add_middleware(InFlightCapMiddleware, max_in_flight=settings.max_in_flight)
    app.state.keys = KeyCache(ttl=settings.key_check_seconds)  # shared with the event streams' key re-checks
    app.add_middleware(DoorMiddleware, keys=app.state.keys, limiter=ratelimit.limiter_for(settings))
    for module in (health, datasets, jobs, events, artifacts, models, workers, usage):
        app.include_router(module.router)
    if DASHBOARD.is_dir():  # the built dashboard, if any, is served at / (it uses only the public API)
        app.mount("/", StaticFiles(directory=DASHBOARD, html=True), name="dashboard")
    return app


app = create_app()
