"""The inference process's settings: sizes parse like every other size, the advertised URL must be one, and
the token is the setting or one secret made once under home (private, the same for every process that asks,
even all at once)."""

from __future__ import annotations

import stat
import threading

import pytest
from pydantic import ValidationError

from inference.__main__ import advertised, memory_budget
from service.settings import Settings


def _settings(monkeypatch, tmp_path, **env: str) -> Settings:
    monkeypatch.setenv("SPARSETUNE_HOME", str(tmp_path / "home"))
    for name in ("SPARSETUNE_INFERENCE_MEMORY", "SPARSETUNE_INFERENCE_TOKEN", "SPARSETUNE_INFERENCE_ADVERTISE_URL",
                 "SPARSETUNE_INFERENCE_HOST", "SPARSETUNE_INFERENCE_PORT", "SPARSETUNE_UP_INFERENCE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_defaults_and_sizes(monkeypatch, tmp_path):
    s = _settings(monkeypatch, tmp_path)
    assert (s.inference_memory, s.inference_host, s.inference_port, s.inference_token, s.inference_advertise_url,
            s.up_inference) == (None, "127.0.0.1", 0, None, None, True)
    assert memory_budget(s, 8 * 2**30) == 4 * 2**30 and memory_budget(s, None) is None
    s = _settings(monkeypatch, tmp_path, SPARSETUNE_INFERENCE_MEMORY="6GiB", SPARSETUNE_UP_INFERENCE="false")
    assert s.inference_memory == 6 * 2**30 and memory_budget(s, 8 * 2**30) == 6 * 2**30 and not s.up_inference
    assert _settings(monkeypatch, tmp_path, SPARSETUNE_INFERENCE_MEMORY="123").inference_memory == 123
    for bad in ({"SPARSETUNE_INFERENCE_MEMORY": "lots"}, {"SPARSETUNE_INFERENCE_MEMORY": "-1GiB"},
                {"SPARSETUNE_INFERENCE_PORT": "70000"}, {"SPARSETUNE_INFERENCE_ADVERTISE_URL": "gpu-box:8123"},
                {"SPARSETUNE_INFERENCE_TOKEN": "short"}):
        with pytest.raises(ValidationError):
            _settings(monkeypatch, tmp_path, **bad)


def test_the_advertised_address(monkeypatch, tmp_path):
    s = _settings(monkeypatch, tmp_path)
    assert advertised(s, "127.0.0.1", 8123) == "http://127.0.0.1:8123"
    assert advertised(s, "::1", 8123) == "http://[::1]:8123"
    assert advertised(s, "0.0.0.0", 8123).endswith(":8123") and "0.0.0.0" not in advertised(s, "0.0.0.0", 8123)
    s = _settings(monkeypatch, tmp_path, SPARSETUNE_INFERENCE_ADVERTISE_URL="http://gpu-box.lan:9000/")
    assert advertised(s, "0.0.0.0", 8123) == "http://gpu-box.lan:9000"


def test_the_token_is_the_setting_or_one_secret_under_home(monkeypatch, tmp_path):
    s = _settings(monkeypatch, tmp_path, SPARSETUNE_INFERENCE_TOKEN="x" * 32)
    assert s.inference_secret() == "x" * 32 and not (s.home / "inference_token").exists()
    s = _settings(monkeypatch, tmp_path)
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(s.inference_secret())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    path = s.home / "inference_token"
    assert len(set(got)) == 1 and len(got[0]) == 64 and got[0] == path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in s.home.iterdir()] == ["inference_token"]  # no temporary file left behind
    assert _settings(monkeypatch, tmp_path).inference_secret() == got[0]
