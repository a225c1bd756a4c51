"""What bench/chaos.py checks once the faults have stopped and the jobs have drained, read straight from the
database and the home folder (not through the API: the audit must not trust the code it audits).

- Every job ended: ``succeeded``, or ``failed`` with a reason that names the fault (``worker_crashed``) after
  its attempts ran out. A job still queued or running is stuck; any other failure is reported with its
  message, as is a job that ran more attempts than ``SPARSETUNE_MAX_ATTEMPTS`` allows.
- No metric step recorded twice (``metric_points`` per job and step), no step missing from a succeeded job,
  exactly one ``end`` event per finished job.
- Every artifact's sha256 and size match its blob's bytes (chunks read back and hashed here).
- Nothing orphaned: no blob that no dataset, artifact or checkpoint refers to, no incomplete blob, no
  checkpoint kept for a finished job, no job work folder left under ``$SPARSETUNE_HOME``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

FAULT_CODES = {"worker_crashed"}  # the reasons that say "the process running it kept dying"
FINISHED = ("succeeded", "failed", "cancelled")


def _jobs(conn: psycopg.Connection, max_attempts: int) -> dict[str, Any]:
    rows = conn.execute("SELECT id, status::text, attempts, error, steps_completed, total_steps FROM jobs").fetchall()
    statuses = Counter(r[1] for r in rows)
    stuck = [{"id": r[0], "status": r[1], "attempts": r[2], "steps": f"{r[4]}/{r[5]}"} for r in rows
             if r[1] not in FINISHED]
    failed = [r for r in rows if r[1] == "failed"]

    def error(r: tuple) -> dict[str, Any]:
        e = r[3] if isinstance(r[3], dict) else json.loads(r[3] or "null") or {}
        return {"id": r[0], "attempts": r[2], "code": e.get("code"), "message": (e.get("message") or "")[:300]}

    unexplained = [error(r) for r in failed
                   if error(r)["code"] not in FAULT_CODES or not error(r)["message"] or r[2] < max_attempts]
    return {
        "jobs": len(rows), "by_status": dict(statuses), "stuck": stuck,
        "failed_by_code": dict(Counter(error(r)["code"] for r in failed)),
        "failed_unexplained": unexplained,
        "over_max_attempts": [{"id": r[0], "status": r[1], "attempts": r[2]} for r in rows if r[2] > max_attempts],
        "attempts": dict(Counter(str(r[2]) for r in rows)),
        "succeeded_short": [r[0] for r in rows if r[1] == "succeeded" and r[4] != r[5]],
    }


def _metrics(conn: psycopg.Connection) -> dict[str, Any]:
    dup = conn.execute("SELECT job_id, step, count(*) FROM metric_points GROUP BY job_id, step "
                       "HAVING count(*) > 1").fetchall()
    gaps = conn.execute(
        "SELECT j.id, j.total_steps, count(m.step), count(DISTINCT m.step) FROM jobs j "
        "LEFT JOIN metric_points m ON m.job_id = j.id AND m.step BETWEEN 1 AND j.total_steps "
        "WHERE j.status = 'succeeded' GROUP BY j.id, j.total_steps HAVING count(DISTINCT m.step) <> j.total_steps"
    ).fetchall()
    ends = conn.execute(
        "SELECT j.id, j.status::text, count(e.id) FROM jobs j LEFT JOIN events e ON e.job_id = j.id AND e.type = 'end' "
        "WHERE j.status IN ('succeeded', 'failed', 'cancelled') GROUP BY j.id, j.status HAVING count(e.id) <> 1"
    ).fetchall()
    repeated = conn.execute(  # steps redone after a resume send their metric event again: reported, not an error
        "SELECT count(*) FROM (SELECT job_id, data->>'step' FROM events WHERE type = 'metric' AND data ? 'train_loss' "
        "GROUP BY job_id, data->>'step' HAVING count(*) > 1) t").fetchone()[0]
    return {"metric_steps_recorded_twice": [{"job": r[0], "step": r[1], "times": r[2]} for r in dup],
            "succeeded_jobs_missing_steps": [{"job": r[0], "total": r[1], "recorded": r[3]} for r in gaps],
            "finished_jobs_without_one_end_event": [{"job": r[0], "status": r[1], "ends": r[2]} for r in ends],
            "metric_events_repeated_after_resume": repeated}


def _artifacts(conn: psycopg.Connection) -> dict[str, Any]:
    rows = conn.execute("SELECT a.job_id, a.name, a.blob_id, a.bytes, a.sha256, b.sha256, b.bytes, b.complete "
                        "FROM artifacts a LEFT JOIN blobs b ON b.id = a.blob_id").fetchall()
    bad = []
    for job_id, name, blob_id, size, sha, blob_sha, blob_size, complete in rows:
        digest, total = hashlib.sha256(), 0
        with conn.cursor(name=f"chunks_{blob_id}") as cur:  # server-side: one chunk in memory at a time
            cur.execute("SELECT data FROM blob_chunks WHERE blob_id = %s ORDER BY seq", (blob_id,))
            for (data,) in cur:
                digest.update(data)
                total += len(data)
        if not complete or digest.hexdigest() != sha or sha != blob_sha or total != size or size != blob_size:
            bad.append({"job": job_id, "name": name, "recorded_sha256": sha, "bytes_sha256": digest.hexdigest(),
                        "recorded_bytes": size, "bytes": total, "blob_complete": complete})
    return {"artifacts": len(rows), "artifact_sha256_mismatches": bad}


def _orphans(conn: psycopg.Connection, home: Path) -> dict[str, Any]:
    orphan_blobs = [r[0] for r in conn.execute(
        "SELECT id FROM blobs WHERE id NOT IN (SELECT blob_id FROM datasets UNION SELECT blob_id FROM artifacts "
        "UNION SELECT blob_id FROM checkpoints)").fetchall()]
    incomplete = [r[0] for r in conn.execute("SELECT id FROM blobs WHERE NOT complete").fetchall()]
    kept = [{"job": r[0], "status": r[1], "step": r[2]} for r in conn.execute(
        "SELECT c.job_id, j.status::text, c.step FROM checkpoints c JOIN jobs j ON j.id = c.job_id "
        "WHERE j.status IN ('succeeded', 'failed', 'cancelled')").fetchall()]
    # the training child works in $HOME/work/<job>-*, a merge in $HOME/<job>-merge-*; none may outlive its job
    folders = sorted(p.name for p in (home / "work").glob("job_*")) if (home / "work").is_dir() else []
    folders += sorted(p.name for p in home.glob("job_*-merge-*"))
    return {"orphan_blobs": orphan_blobs, "incomplete_blobs": incomplete,
            "checkpoints_of_finished_jobs": kept, "work_folders_left": folders,
            "blobs": conn.execute("SELECT count(*) FROM blobs").fetchone()[0]}


def audit(dsn: str, home: Path, max_attempts: int) -> dict[str, Any]:
    """Every check on the drained stack; the lists hold what failed a check (empty: it held)."""
    with psycopg.connect(dsn) as conn:
        return {**_jobs(conn, max_attempts), **_metrics(conn), **_artifacts(conn), **_orphans(conn, home)}


PROBLEMS = ("stuck", "failed_unexplained", "over_max_attempts", "succeeded_short", "metric_steps_recorded_twice",
            "succeeded_jobs_missing_steps", "finished_jobs_without_one_end_event", "artifact_sha256_mismatches",
            "orphan_blobs", "incomplete_blobs", "checkpoints_of_finished_jobs", "work_folders_left")


def problems(result: dict[str, Any]) -> dict[str, int]:
    """How many things failed each check (0 everywhere: the run held up)."""
    return {name: len(result[name]) for name in PROBLEMS}
