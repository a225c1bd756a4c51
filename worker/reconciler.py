"""The periodic safety net in every worker: what service/reconcile.py does (the API runs it too), and the sweep
of this host's work folders whose run died (service/workdirs.py), which only a process on this host can see."""

from __future__ import annotations

from service import reconcile, workdirs
from service.periodic import Periodic
from service.settings import get_settings


def tick() -> None:
    reconcile.reconcile_once()
    workdirs.sweep()


_periodic = Periodic("reconcile", tick, lambda: get_settings().reconcile_seconds)
start, stop = _periodic.start, _periodic.stop
