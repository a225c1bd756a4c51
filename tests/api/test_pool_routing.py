"""Pool routing rules without workers: settings parsing, the smallest fitting pool, live pools first, devices."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from service import pools
from service.settings import Settings, get_settings


@pytest.fixture()
def configure(monkeypatch):
    def _set(value: object) -> None:
        monkeypatch.setenv("SPARSETUNE_POOLS", json.dumps(value))
        get_settings.cache_clear()

    yield _set
    monkeypatch.delenv("SPARSETUNE_POOLS", raising=False)
    get_settings.cache_clear()


def test_sizes_parse_with_units_and_bad_ones_are_refused_naming_the_pool(monkeypatch):
    monkeypatch.setenv("SPARSETUNE_POOLS", json.dumps({"a": "24GiB", "b": "80 GB", "c": 1024,
                                                       "d": {"memory": "1MiB", "devices": 4}}))
    assert Settings().pools == {"a": {"memory": 24 * 2**30, "devices": 1}, "b": {"memory": 80 * 10**9, "devices": 1},
                                "c": {"memory": 1024, "devices": 1}, "d": {"memory": 2**20, "devices": 4}}
    for bad, words in (({"a": "lots"}, "SPARSETUNE_POOLS['a']"), ({"a": -1}, "positive size"),
                       ({"a b": "1GB"}, "pool name"), ({"a": {"memory": "1GB", "devices": 0}}, "devices"),
                       ({"a": {"gpus": 2}}, "memory")):
        monkeypatch.setenv("SPARSETUNE_POOLS", json.dumps(bad))
        with pytest.raises(ValidationError, match=words.replace("[", r"\[").replace("]", r"\]")):
            Settings()


def test_unconfigured_is_one_unlimited_default_pool_on_the_plain_queue(configure):
    configure({})
    (only,) = pools.configured()
    assert (only.name, only.memory, only.queue, only.devices) == ("default", None, get_settings().queue_name, None)
    assert pools.pick(10**15, set(), devices=8) == only


def test_the_smallest_fitting_pool_prefers_live_ones_and_counts_devices(configure):
    configure({"small": "1GiB", "big": "8GiB", "multi": {"memory": "8GiB", "devices": 4}})
    names = lambda fits: [p.name for p in fits]  # noqa: E731
    assert names(pools.configured()) == ["small", "big", "multi"]
    assert pools.pick(2**29).name == "small"
    assert pools.pick(2**31).name == "big"
    assert pools.pick(2**29, live={"big"}).name == "big"  # small has no live worker: move up
    assert pools.pick(2**31, devices=2).name == "multi"
    assert pools.pick(None).name == "multi"  # unknown estimate: the largest
    assert pools.pick(2**34) is None and "largest worker pool, multi" in pools.too_big_message(2**34)
    assert pools.pick(2**29, devices=8) is None and "num_devices 8" in pools.too_big_message(2**29, 8)
