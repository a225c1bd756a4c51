"""Health, readiness, Prometheus, models and estimates, OpenAPI, and the one error shape."""

from __future__ import annotations

import sys


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["broker"] == "ok" and r.json()["database"] == "ok"


def test_prometheus_metrics_count_jobs_by_status(client):
    text = client.get("/metrics").text
    assert 'sparsetune_jobs{status="queued"}' in text and "sparsetune_queue_depth" in text


def test_list_models_reads_config_without_torch(client, auth):
    r = client.get("/v1/models", headers=auth)
    assert r.status_code == 200
    models = {m["id"]: m for m in r.json()["data"]}
    tiny = models["cfg-llama"]
    assert tiny["architecture"] == "LlamaForCausalLM" and tiny["targets"][:3] == ["q", "k", "v"]
    # embeddings 30522*64 (tied) + 2 layers x (attention 64*64*2 + 64*32*2 + mlp 3*64*128 + norms) + final norm
    assert tiny["parameters"] == 30522 * 64 + 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 128) + 64


def test_estimate_reports_trainable_and_memory(client, auth):
    r = client.get("/v1/models/cfg-llama/estimate?method=smt&budget=4096&batch_size=2&max_seq_len=32",
                   headers=auth)
    assert r.status_code == 200, r.text
    est = r.json()
    assert est["trainable_params"] == 4096 and est["total_params"] > 4096
    mem = est["memory"]
    assert mem["optimizer"] == 2 * mem["trainable"] and mem["peak"] >= mem["weights"] + mem["activations"]
    full = client.get("/v1/models/cfg-llama/estimate?method=full", headers=auth).json()
    assert full["trainable_params"] == full["total_params"]
    assert client.get("/v1/models/nope/estimate", headers=auth).status_code == 404
    assert client.get("/v1/models/cfg-llama/estimate?method=x", headers=auth).json()["error"]["param"] == "method"


def test_unknown_route_uses_error_shape(client, auth):
    r = client.get("/v1/nothing", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.get("/v1/nothing")  # the door checks the key before routing: no key, no map of the API
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_openapi_lists_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/jobs", "/v1/jobs/{job_id}/events", "/v1/datasets", "/v1/models/{model_id}/estimate",
              "/v1/jobs/{job_id}/artifacts/{name}"):
        assert p in paths


def test_api_never_imports_torch(client, auth):
    """Request paths stay torch-free (checked in a fresh interpreter: the test process itself may have torch)."""
    import os
    import subprocess

    code = """
import sys
from fastapi.testclient import TestClient
from api.main import app
c = TestClient(app)
h = {"Authorization": "Bearer " + sys.argv[1]}
ds = c.post("/v1/datasets", headers=h, files={"file": ("a.jsonl", b'{"prompt": "p", "completion": "c"}\\n')})
assert ds.status_code == 201, ds.text
body = {"model": "cfg-llama", "training_dataset": ds.json()["id"], "method": "smt", "budget": 0.01}
for r in (c.get("/v1/models", headers=h), c.get("/v1/models/cfg-llama/estimate", headers=h), c.get("/v1/methods", headers=h),
          c.post("/v1/jobs", headers=h, json=body), c.get("/v1/jobs", headers=h), c.get("/readyz")):
    assert r.status_code < 300, r.text
assert "torch" not in sys.modules, "torch imported"
print("clean")
"""
    key = auth["Authorization"].split()[1]
    out = subprocess.run([sys.executable, "-c", code, key], capture_output=True, text=True, timeout=60,
                         env=os.environ.copy())
    assert out.stdout.strip() == "clean", out.stderr[-2000:]


def test_estimate_takes_the_method_options_a_job_would_use(client, auth):
    base = "/v1/models/cfg-llama/estimate?method=smt&budget=1600"
    default = client.get(base, headers=auth).json()["trainable_params"]
    assert default == 1536  # the default rule: 1600 buys no 200 blocks of any size, so the smallest, 16×16
    big = client.get(base + '&method_options={"block_size": 32}', headers=auth).json()["trainable_params"]
    assert big == 1024, "32×32 blocks fill the budget to within one block"
    bad = client.get(base + '&method_options={"bogus": 1}', headers=auth)
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "method_options.bogus"
    assert client.get(base + "&method_options=[1]", headers=auth).json()["error"]["param"] == "method_options"
