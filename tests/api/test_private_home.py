"""The embedded home is private to its user: the first key's file is created 0600 (never written first and
restricted after, never through a planted link), and an existing home's modes are repaired at start-up.
What a real `sparsetune up` run creates is checked in tests/e2e/test_up_home.py."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.fixtures import environment


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture()
def open_umask() -> Iterator[None]:
    """A umask that restricts nothing, so a mode the code does not set itself shows."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture()
def embedded_home(tmp_path) -> Iterator[Path]:
    from cli.bootstrap import migrate

    home = tmp_path / "home"
    with environment({"DATABASE_URL": "", "BROKER_URL": "", "SPARSETUNE_HOME": str(home)}):  # empty = unset
        migrate()
        yield home


def test_first_key_file_is_created_private_and_not_through_a_link(embedded_home, tmp_path, open_umask,
                                                                  monkeypatch):
    from cli.bootstrap import ensure_first_key

    elsewhere = tmp_path / "elsewhere.txt"  # a file others can read, and a link to it where the key goes
    elsewhere.write_text("not a key\n")
    (embedded_home / "api_key").symlink_to(elsewhere)
    created: list[int] = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):
        fd = real_open(path, flags, mode, *args, **kwargs)
        if "api_key" in os.fspath(path) and flags & os.O_CREAT:
            created.append(stat.S_IMODE(os.fstat(fd).st_mode))  # the mode it had from its first moment
        return fd

    monkeypatch.setattr(os, "open", spy)
    key = ensure_first_key()
    assert key and key.startswith("st_")
    assert created == [0o600]
    path = embedded_home / "api_key"
    assert not path.is_symlink() and mode(path) == 0o600 and path.read_text() == key + "\n"
    assert elsewhere.read_text() == "not a key\n"
    assert sorted(p.name for p in embedded_home.iterdir() if "api_key" in p.name) == ["api_key"]  # no temp left
    assert mode(embedded_home / "sparsetune.db") == 0o600  # made before SQLite could make it 0644


def test_secure_home_makes_an_existing_home_private_and_leaves_link_targets_alone(tmp_path, open_umask):
    from service.private import secure_home

    home = tmp_path / "home"
    (home / "work" / "job_1").mkdir(parents=True, mode=0o755)
    home.chmod(0o755)
    (home / "work").chmod(0o775)
    (home / "sparsetune.db").write_text("db")
    (home / "sparsetune.db").chmod(0o644)
    (home / "work" / "job_1" / "train.jsonl").write_text("{}")
    (home / "work" / "job_1" / "train.jsonl").chmod(0o666)
    (home / "work" / "run.sh").write_text("#!/bin/sh\n")
    (home / "work" / "run.sh").chmod(0o755)
    outside = tmp_path / "outside.txt"
    outside.write_text("shared")
    outside.chmod(0o644)
    (home / "link").symlink_to(outside)
    old = os.umask(0o022)
    try:
        secure_home(home)
        assert os.umask(0o022) == 0o077  # what `up` and its processes create from now on is private too
    finally:
        os.umask(old)
    assert mode(home) == mode(home / "work") == mode(home / "work" / "job_1") == 0o700
    assert mode(home / "sparsetune.db") == mode(home / "work" / "job_1" / "train.jsonl") == 0o600
    assert mode(home / "work" / "run.sh") == 0o700  # the owner's bits are kept
    assert mode(outside) == 0o644 and (home / "link").is_symlink()


def test_filesystem_queue_keeps_its_control_folder_under_home(tmp_path):
    from service.settings import get_settings

    with environment({"DATABASE_URL": "", "BROKER_URL": "", "SPARSETUNE_HOME": str(tmp_path / "home")}):
        options = get_settings().broker_transport_options()
    assert options["control_folder"] == str(tmp_path / "home" / "broker" / "control")
    assert all(mode(tmp_path / "home" / "broker" / sub) == 0o700 for sub in ("queue", "processed", "control"))
