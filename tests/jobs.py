"""Job helpers over any HTTP client with the API's paths (FastAPI's TestClient or an httpx.Client with a
base_url): create a tiny SMT job, read it, wait for it, list its events and metric steps."""

from __future__ import annotations

from typing import Any

FINISHED = ("succeeded", "failed", "cancelled")


def create(client, auth, dataset: str, steps: int, model: str = "tiny-llama") -> str:
    body = {"model": model, "training_dataset": dataset, "method": "smt", "budget": 4096,
            "hyperparameters": {"steps": steps, "batch_size": 4, "max_seq_len": 32},
            "method_options": {"block_size": 16, "selection_steps": 2}}
    r = client.post("/v1/jobs", headers=auth, json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def job_of(client, auth, job_id: str) -> dict:
    return client.get(f"/v1/jobs/{job_id}", headers=auth).json()


def finished(client, auth, job_id: str) -> dict | None:
    job = job_of(client, auth, job_id)
    return job if job["status"] in FINISHED else None


def events_of(client, auth, job_id: str) -> list[dict]:
    """All the job's events, oldest first (following the pages)."""
    out, after = [], ""
    while True:
        page = client.get(f"/v1/jobs/{job_id}/events?limit=100{after}", headers=auth).json()
        out += page["data"]
        if not page["has_more"]:
            return out[::-1]
        after = f"&after={page['last_id']}"


def log_messages(client, auth, job_id: str) -> list[str]:
    return [e["data"].get("message", "") for e in events_of(client, auth, job_id) if e["type"] == "log"]


def metric_steps(client, auth, job_id: str) -> list[Any]:
    return [m["step"] for m in client.get(f"/v1/jobs/{job_id}/metrics", headers=auth).json()["data"]]
