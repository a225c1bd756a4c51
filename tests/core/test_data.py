"""The four data formats: validation names the line and field; tokenisation masks what must not be learned."""

from __future__ import annotations

import json

import pytest

from smt_core.data import IGNORE, BatchPlan, encode, split_holdout
from smt_core.dataformats import DataFormatError, read_jsonl, validate_lines
from tests import factories


def _lines(*objs) -> list[bytes]:
    return [(o if isinstance(o, str) else json.dumps(o)).encode() for o in objs]


@pytest.mark.parametrize("rows,fmt", [
    (factories.completion_rows(3), "prompt_completion"),
    (factories.chat_rows(3), "chat"),
    (factories.classification_rows(3), "classification"),
    (factories.multiple_choice_rows(3), "multiple_choice"),
])
def test_validate_detects_each_format(rows, fmt):
    report, parsed = validate_lines(_lines(*rows))
    assert report.ok and report.format == fmt and report.rows == 3 and parsed == rows


def test_validate_names_line_and_field_of_each_problem():
    report, _ = validate_lines(_lines(
        {"text": "fine", "label": "pos"},
        {"text": "no label"},
        "{not json",
        {"text": "x", "label": "neg", "extra": 1},
        {"prompt": "p", "completion": "c"},
    ))
    got = [(e.line, e.field) for e in report.errors]
    assert (2, "label") in got and (3, None) in got and (4, "extra") in got
    assert report.total_errors == 4 and report.rows == 1
    assert any("one format a file" in e.message or "unknown field" in e.message for e in report.errors if e.line == 5)


def test_validate_multiple_choice_label_out_of_range_and_chat_without_assistant():
    report, _ = validate_lines(_lines({"prompt": "p", "choices": ["a", "b"], "label": 2}))
    assert report.errors[0].field == "label" and "out of range" in report.errors[0].message
    report, _ = validate_lines(_lines({"messages": [{"role": "user", "content": "hi"}]}))
    assert report.errors[0].field == "messages"


def test_validate_invalid_utf8_and_error_cap():
    report, _ = validate_lines([b"\xff\xfe"] + [b"[1]"] * 150)
    assert report.errors[0].message == "not valid UTF-8"
    assert len(report.errors) == 100 and report.total_errors == 151


def test_validate_orders_integer_labels_numerically_and_odd_digit_labels_as_text():
    # "--5" and "²" pass str.isdigit after stripping a minus, but int() refuses them: they are text labels
    labels = ["10", "-1", "2", "--5", "²", "b", "a"]
    report, _ = validate_lines(_lines(*[{"text": "x", "label": label} for label in labels]))
    assert report.ok and report.label_names == ["-1", "2", "10", "--5", "a", "b", "²"]


def test_read_jsonl_raises_with_details(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "a", "label": 1}\n{"text": 5, "label": 1}\n')
    with pytest.raises(DataFormatError, match="line 2 field 'text'") as exc:
        read_jsonl(p)
    assert exc.value.details[0]["line"] == 2


def test_prompt_tokens_are_masked_and_long_rows_truncated(tiny_llama_dir):
    from smt_core.models import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model(str(tiny_llama_dir)))
    enc = encode([{"prompt": "the red fruit is", "completion": " apple"},
                  {"prompt": "word " * 100, "completion": " apple"}], "prompt_completion", tok, 16)
    first = enc.examples[0]
    n_prompt = len(tok("the red fruit is")["input_ids"])
    assert first.labels[:n_prompt] == [IGNORE] * n_prompt and all(x != IGNORE for x in first.labels[n_prompt:])
    assert enc.truncated == 1 and len(enc.examples[1].input_ids) == 16
    answer = tok(" apple", add_special_tokens=False)["input_ids"]
    kept = [t for t, lab in zip(enc.examples[1].input_ids, enc.examples[1].labels, strict=True) if lab != IGNORE]
    assert kept[:len(answer)] == answer, "the answer survives truncation (the prompt loses its start)"


def test_chat_learns_assistant_turns_only(tiny_llama_dir):
    from smt_core.models import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model(str(tiny_llama_dir)))
    row = {"messages": [{"role": "user", "content": "colour of lime"}, {"role": "assistant", "content": "green"}]}
    ex = encode([row], "chat", tok, 64).examples[0]
    learned = tok.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE])
    assert "green" in learned and "lime" not in learned


def test_batch_plan_is_a_pure_function_of_seed_and_step():
    a, b = BatchPlan(50, 8, seed=3), BatchPlan(50, 8, seed=3)
    assert [a.indices(s) for s in range(14)] == [b.indices(s) for s in range(14)]
    assert sorted(i for s in range(7) for i in a.indices(s)) == list(range(50)), "an epoch sees each row once"
    assert a.indices(0) != BatchPlan(50, 8, seed=4).indices(0)


def test_holdout_split_is_seeded_and_disjoint():
    rows = [{"i": i} for i in range(40)]
    tr, ev = split_holdout(rows, 0.1, seed=1)
    assert len(ev) == 4 and len(tr) == 36 and not {r["i"] for r in tr} & {r["i"] for r in ev}
    assert split_holdout(rows, 0.1, seed=1) == (tr, ev)


def test_openai_chat_format_weight_and_name_accepted_tool_calls_named():
    """OpenAI's chat fine-tuning rows as OpenAI documents them: ``name`` and an assistant ``weight`` 0|1 pass;
    tool or function calling (fields, roles, top-level tools) is a per-line error naming the field."""
    ok = {"messages": [{"role": "system", "content": "be brief", "name": "sys"},
                       {"role": "user", "content": "hi", "name": "ann"},
                       {"role": "assistant", "content": "draft", "weight": 0},
                       {"role": "user", "content": "again"}, {"role": "assistant", "content": "hello", "weight": 1}]}
    report, _ = validate_lines(_lines(ok))
    assert report.ok and report.format == "chat", report.errors
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    bad = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [call]}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "42", "tool_call_id": "c1"},
                      {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "function", "content": "42"},
                      {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"},
                      {"role": "assistant", "content": "a", "function_call": {"name": "f", "arguments": "{}"}}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": []},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0.5}]},
        {"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]},
    ]
    report, _ = validate_lines(_lines(ok, *bad))
    got = {e.line: (e.field, e.message) for e in report.errors}
    assert got[2][0] == "messages[1].tool_calls" and "tool and function calling" in got[2][1]
    assert got[3][0] == "messages[1].tool_call_id" and got[4][0] == "messages[1].role"
    assert got[5][0] == "messages[1].function_call" and got[6][0] == "tools"
    assert got[7][0] == "messages[1].weight" and got[8][0] == "messages[0].weight"
    assert got[9][0] == "messages" and "weight 1" in got[9][1]
    assert report.total_errors == len(bad)


def test_chat_weight_zero_assistant_turns_get_no_loss(tiny_llama_dir):
    from smt_core.models import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model(str(tiny_llama_dir)))
    row = {"messages": [{"role": "user", "content": "colour of lime", "name": "ann"},
                        {"role": "assistant", "content": "purple", "weight": 0},
                        {"role": "user", "content": "really?"}, {"role": "assistant", "content": "green", "weight": 1}]}
    ex = encode([row], "chat", tok, 128).examples[0]
    learned = tok.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE])
    assert "green" in learned and "purple" not in learned and "lime" not in learned
    assert "purple" in tok.decode(ex.input_ids), "a weight-0 turn is still context"
