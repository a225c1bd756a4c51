"""The one settings object: embedded defaults, the model allowlist, placeholder secrets refused in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_embedded_default_lives_under_home(monkeypatch, tmp_path):
    for k in ("DATABASE_URL", "BROKER_URL", "SPARSETUNE_MODELS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SPARSETUNE_HOME", str(tmp_path))
    s = Settings()
    assert s.embedded and s.db_url == f"sqlite:///{tmp_path}/sparsetune.db" and s.broker == "filesystem://"
    opts = s.broker_transport_options()
    assert opts["data_folder_in"].startswith(str(tmp_path)) and (tmp_path / "broker" / "queue").is_dir()


def test_models_allowlist_parsed_and_checked(monkeypatch):
    monkeypatch.setenv("SPARSETUNE_MODELS", '{"mine": "/models/mine"}')
    assert Settings().models == {"mine": "/models/mine"}
    monkeypatch.setenv("SPARSETUNE_MODELS", '["not", "an", "object"]')
    with pytest.raises(ValidationError, match="JSON object"):
        Settings()


def test_placeholder_password_refused_outside_development(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://app:changethis@db/app")
    monkeypatch.setenv("SPARSETUNE_ENV", "production")
    with pytest.raises(ValidationError, match="placeholder"):
        Settings()
    monkeypatch.setenv("SPARSETUNE_ENV", "local")
    assert Settings().database_url.endswith("@db/app")
