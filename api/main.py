"""The FastAPI application: routes, the one error shape, an upload size guard and request logs."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api import background, docs, errors, headers, ratelimit
from api.door import DoorMiddleware
from api.hosts import AllowedHosts, HostCheckMiddleware
from api.inflight import InFlightCapMiddleware
from api.requestlog import GuardAndLogMiddleware
from api.routes import (
    artifacts,
    datasets,
    events,
    files,
    fine_tuning,
    health,
    inference,
    jobs,
    methods,
    models,
    usage,
    webhooks,
    workers,
)
from service import logs
from service.revocations import mark_for
from service.security import KeyCache
from service.settings import get_settings

DASHBOARD = Path(__file__).resolve().parent.parent / "frontend" / "dist"


def create_app() -> FastAPI:
    settings = get_settings()
    logs.configure(settings.log_level)
    app = FastAPI(title="sparsetune", version="0.1.0",
                  description="Sparse fine-tuning (SMT, SNELL) with LoRA/DoRA/full baselines, as a service.",
                  docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None,
                  lifespan=background.lifespan)  # the reconciler beside the API  # docs.install: no CDN
    errors.install(app)
    docs.install(app)
    # innermost first: body limits and timeouts and the request log; the in-flight cap, which so counts only
    # requests the door let in; the door: key check and rate limit before any body is read; outside it all, the
    # Host check (api/hosts.py) and the security headers (api/headers.py)
    app.add_middleware(GuardAndLogMiddleware, max_upload_bytes=settings.max_upload_bytes,
                       max_body_bytes=settings.max_body_bytes, body_timeout=settings.body_timeout_seconds,
                       min_body_rate=settings.min_body_bytes_per_second)
    app.add_middleware(InFlightCapMiddleware, max_in_flight=settings.max_in_flight)
    # shared with the event streams' key re-checks; the revocation mark lets routes trust the door's check
    app.state.keys = KeyCache(ttl=settings.key_check_seconds, mark=mark_for(settings))
    app.add_middleware(DoorMiddleware, keys=app.state.keys, limiter=ratelimit.limiter_for(settings))
    app.add_middleware(HostCheckMiddleware, allowed=AllowedHosts(settings.allowed_hosts))  # before the door
    headers.install(app)  # outermost of all: every response, a 500 included, carries the security headers
    for module in (health, datasets, jobs, events, artifacts, models, methods, workers, usage, inference,
                   webhooks, files, fine_tuning):
        app.include_router(module.router)
    app.include_router(models.openai_router)  # after models.router: /v1/models/{id}/estimate first
    if DASHBOARD.is_dir():  # the built dashboard, if any, is served at / (it uses only the public API)
        app.mount("/", StaticFiles(directory=DASHBOARD, html=True), name="dashboard")
    return app


app = create_app()
