"""The registry and the torch-free tables the API validates against must agree."""

from __future__ import annotations

import dataclasses

import pytest

from smt_core.estimate import METHOD_OPTIONS, METHODS
from smt_core.registry import available_methods, get_method


def test_every_service_method_is_registered():
    assert set(METHODS) <= set(available_methods())


@pytest.mark.parametrize("method", METHODS)
def test_api_option_table_matches_the_engine_config(method):
    fields = {f.name for f in dataclasses.fields(get_method(method).config_class)}
    assert set(METHOD_OPTIONS[method]) == fields, "api would accept (or refuse) options the engine does not"


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="method: unknown 'nope'; expected one of .*smt"):
        get_method("nope")
