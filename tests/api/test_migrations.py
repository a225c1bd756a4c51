"""Migrations run upgrade -> downgrade -> upgrade on an empty Postgres database and on SQLite."""

from __future__ import annotations

import sqlalchemy as sa

from tests.api.fixtures import alembic, create_database, drop_database

TABLES = {"owners", "api_keys", "blobs", "blob_chunks", "datasets", "jobs", "events", "metric_points",
          "block_selections", "artifacts", "checkpoints", "workers", "webhooks", "webhook_messages",
          "webhook_deliveries"}


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_migrations_up_down_up_on_postgres():
    name, url = create_database()
    try:
        alembic(url, "upgrade", "head")
        assert _tables(url) == TABLES
        alembic(url, "downgrade", "base")
        assert _tables(url) == set()
        engine = sa.create_engine(url)
        with engine.connect() as conn:  # the enum type goes with the tables
            assert conn.execute(sa.text("SELECT count(*) FROM pg_type WHERE typname = 'job_status'")).scalar() == 0
        engine.dispose()
        alembic(url, "upgrade", "head")
        assert _tables(url) == TABLES
        engine = sa.create_engine(url)
        with engine.connect() as conn:  # chunks are stored uncompressed, out of line
            storage = conn.execute(sa.text("SELECT attstorage FROM pg_attribute WHERE attrelid = "
                                           "'blob_chunks'::regclass AND attname = 'data'")).scalar()
            jsonb = conn.execute(sa.text("SELECT data_type FROM information_schema.columns WHERE "
                                         "table_name = 'jobs' AND column_name = 'metrics'")).scalar()
        engine.dispose()
        assert storage == "e" and jsonb == "jsonb"
    finally:
        drop_database(name)


def test_migrations_up_down_up_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    alembic(url, "upgrade", "head")
    assert _tables(url) == TABLES
    alembic(url, "downgrade", "base")
    assert _tables(url) == set()
    alembic(url, "upgrade", "head")
    assert _tables(url) == TABLES


def test_migrations_match_the_models(tmp_path):
    """The tables the code declares are exactly the tables the migrations build (no forgotten migration)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from service.models import Base

    url = f"sqlite:///{tmp_path / 'm.db'}"
    alembic(url, "upgrade", "head")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
