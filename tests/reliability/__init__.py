"""Reliability under real faults (issue 7): each promise is one test, each fault real (a kill, a restart,
a memory cap), on a private PostgreSQL and Redis that restarting disturbs nothing else.

- training child SIGKILLed mid-job → resumes from its checkpoint, succeeds once:
  tests/worker/test_worker.py::test_sigkill_training_child_resumes_from_checkpoint_and_succeeds_once
- worker host gone (worker and child killed, lease expires) → another worker finishes it: test_worker_lost.py
- Redis restarted with jobs queued (no persistence) → none lost, the reconciler re-enqueues: test_broker_restart.py
- PostgreSQL restarted mid-job → the worker retries its writes, the API answers 503 meanwhile and recovers by
  itself: test_database_restart.py
- API restarted during an SSE stream → a reconnect with Last-Event-ID misses no event: test_api_restart.py
- out of memory under a real cap → fails saying what to try; the worker serves the next job:
  tests/worker/test_memory_cap.py
"""
