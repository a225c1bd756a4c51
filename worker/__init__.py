"""sparsetune's worker: Celery delivers "look at job X", the database decides who runs it, a child trains."""
