"""What an API process runs beside its requests, for the app's lifespan: the reconciler (service/reconcile.py),
so a worker that died is noticed, and its job sent again or failed, even when no worker is alive to do it.
``SPARSETUNE_API_RECONCILER=false`` turns it off (e.g. for API processes beyond the first)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import reconcile
from service.heap import tune_for_serving
from service.periodic import Periodic
from service.settings import get_settings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    reconciler = None
    if settings.api_reconciler:
        reconciler = Periodic("api-reconcile", reconcile.reconcile_once, lambda: settings.reconcile_seconds)
        reconciler.start()
    app.state.reconciler = reconciler
    tune_for_serving()  # what exists now lives as long as the process: out of the collector's walks (service/heap.py)
    try:
        yield
    finally:
        if reconciler is not None:
            reconciler.stop(wait=5)
