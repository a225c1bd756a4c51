"""PostgreSQL restarted while the API is idle: no request met the outage, so nothing told the API's pool that
its connections died. The first request afterwards must still succeed: a connection idle for a while is
pinged before use and replaced if dead (service/db.py; the API does not ping on every checkout, which cost a
round trip per request)."""

from __future__ import annotations

import time

from service.db import IDLE_PING_SECONDS


def test_first_request_after_a_restart_while_idle_succeeds(faults, api, http, auth):
    for _ in range(3):  # the pool now holds a connection to the old server process
        assert http.get("/v1/jobs", headers=auth).status_code == 200
    faults.pg.stop()
    faults.pg.start()
    time.sleep(IDLE_PING_SECONDS)  # a real restart takes longer than this anyway
    r = http.get("/v1/jobs", headers=auth)
    assert r.status_code == 200, r.text
    assert http.get("/v1/jobs?limit=1", headers=auth).status_code == 200
