"""Shared fixtures: offline mode, tiny models built once per session, small data files."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The converted SmolLM2 folder and other caches: one per checkout, never the user's ~/.sparsetune
os.environ.setdefault("SPARSETUNE_HOME", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".sparsetune-test"))

import pytest  # noqa: E402

from tests import factories  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    return factories.build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    return factories.build_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    return factories.build_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2")


@pytest.fixture
def classification_file(tmp_path):
    return factories.write_jsonl(tmp_path / "cls.jsonl", factories.classification_rows(64))


@pytest.fixture
def completion_file(tmp_path):
    return factories.write_jsonl(tmp_path / "pc.jsonl", factories.completion_rows(64))
