"""The collector's tuning for serving processes (service/heap.py): what exists once the API has started is out of
the collector's walks, and the young generation is collected rarely. Each check runs in a fresh interpreter,
since the freeze is once per process and the test run's own process may have frozen long ago."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=os.environ.copy(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freezing_keeps_garbage_out_and_takes_the_living_out_of_the_walks():
    got = _run("""
import gc, json, weakref
class Thing: pass
living = Thing()
cycle = Thing(); cycle.me = cycle; garbage = weakref.ref(cycle); del cycle
from service.heap import tune_for_serving, YOUNG_EVERY
frozen = tune_for_serving()
walked = gc.get_objects()
print(json.dumps({"frozen": frozen, "garbage_collected": garbage() is None,
                  "living_walked": any(o is living for o in walked), "threshold": gc.get_threshold(),
                  "young_every": YOUNG_EVERY, "again": tune_for_serving()}))
""")
    assert got["garbage_collected"], "unreachable cycles must be collected before the freeze, not frozen"
    assert not got["living_walked"], "an object alive at the freeze must not be walked by later collections"
    assert got["frozen"] > 1000 and got["again"] == got["frozen"]
    assert got["threshold"][0] == got["young_every"] >= 10_000


def test_the_api_process_freezes_what_its_startup_made(service_env):
    got = _run("""
import gc, json
from fastapi.testclient import TestClient
from api.main import create_app
with TestClient(create_app(), base_url="http://localhost") as client:
    assert client.get("/healthz").status_code == 200
    print(json.dumps({"frozen": gc.get_freeze_count(), "walked": len(gc.get_objects()),
                      "threshold": gc.get_threshold()}))
""")
    # the imports alone are ~130,000 objects; what a collection walks afterwards is what was made since
    assert got["frozen"] > 50_000, got
    assert got["walked"] < got["frozen"] / 2, got
    assert got["threshold"][0] >= 10_000, got
