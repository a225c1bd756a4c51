"""The periodic safety net in every worker: what api/reconcile.py does (the API runs it too), and the sweep
of this host's work folders whose run died (api/workdirs.py), which only a process on this host can see."""

from __future__ import annotations

from api import reconcile, workdirs
from api.periodic import Periodic
from api.settings import get_settings


def tick() -> None:
    reconcile.reconcile_once()
    workdirs.sweep()


_periodic = Periodic("reconcile", tick, lambda: get_settings().reconcile_seconds)
start, stop = _periodic.start, _periodic.stop
