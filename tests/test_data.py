"""synth.data: import, export and validation of preference files, splits, grouping by user."""

from __future__ import annotations

import json

import pytest

from synth.data import (
    MAX_TURN_CHARS,
    PairFileError,
    group_by_user,
    load_pairs,
    save_pairs,
    split_train_validation,
    truncate_middle,
)

GOOD = {"context": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Plan my week"}],
        "chosen": {"role": "assistant", "content": "Monday: gym."}, "rejected": {"role": "model", "content": "No."},
        "user_id": "u7", "conversation_id": "c1", "split": "train"}


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_round_trip_jsonl_and_json_list_in_the_official_shape(tmp_path):
    pairs = load_pairs(write_lines(tmp_path / "p.jsonl", [GOOD, {**GOOD, "user_id": "u8"}]))
    assert len(pairs) == 2 and len(pairs[0].context) == 3 and pairs[0].rejected.role == "model"
    assert pairs[0].prompt == "Plan my week"
    save_pairs(pairs, tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text())[0] == GOOD  # unchanged shape, loads in the official lib
    assert load_pairs(tmp_path / "out.json") == pairs
    save_pairs(pairs, tmp_path / "out.jsonl")
    assert load_pairs(tmp_path / "out.jsonl") == pairs


@pytest.mark.parametrize("row, line, field, problem", [
    ("{not json", 2, None, "not valid JSON"),
    ({k: v for k, v in GOOD.items() if k != "chosen"}, 2, "chosen", "missing required field"),
    ({**GOOD, "context": "  "}, 2, "context[0].content", "empty content"),
    ({**GOOD, "context": 42}, 2, "context", "non-empty list"),
    ({**GOOD, "chosen": {"role": "assistant", "content": 5}}, 2, "chosen.content", "not a string"),
    ({**GOOD, "chosen": {"role": "critic", "content": "x"}}, 2, "chosen.role", "is not one of"),
    ({**GOOD, "rejected": {"role": "assistant", "content": "Monday: gym. "}}, 2, "rejected", "identical"),
    ({**GOOD, "user_id": ["a"]}, 2, "user_id", "must be a string"),
    ({**GOOD, "chosen": {"role": "assistant", "content": "x" * (MAX_TURN_CHARS + 1)}}, 2, "chosen.content",
     "limit"),
])
def test_errors_name_file_line_and_field(tmp_path, row, line, field, problem):
    path = write_lines(tmp_path / "bad.jsonl", [GOOD, row])
    with pytest.raises(PairFileError) as caught:
        load_pairs(path)
    error = caught.value
    assert (error.path, error.line, error.field_name) == (str(path), line, field)
    assert problem in str(error) and str(path) in str(error) and f"line {line}" in str(error)


def test_json_list_errors_point_at_the_right_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("[\n" + json.dumps(GOOD) + ",\n" + json.dumps({**GOOD, "chosen": {"role": "assistant"}}) + "\n]")
    with pytest.raises(PairFileError, match=r"line 3, field 'chosen.content'"):
        load_pairs(path)


@pytest.mark.parametrize("content, problem", [(b"", "empty"), (b"\n\n", "empty"), (b"\x89PNG\x00\x00data", "binary"),
                                              (b"\xff\xfe\xfa bad", "UTF-8")])
def test_empty_and_binary_files_are_refused(tmp_path, content, problem):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(content)
    with pytest.raises(PairFileError, match=problem):
        load_pairs(path)


def test_long_turns_are_accepted_but_truncated_in_prompts():
    text = "a" * 3000 + "MIDDLE" + "z" * 3000
    short = truncate_middle(text, 1000)
    assert len(short) < 1100 and short.startswith("a") and short.endswith("z") and "MIDDLE" not in short
    assert "characters omitted" in short and truncate_middle("tiny", 1000) == "tiny"


def test_default_split_trains_on_the_first_70_percent_like_the_official_library(tmp_path):
    pairs = load_pairs(write_lines(tmp_path / "p.jsonl", [{**GOOD, "conversation_id": str(i), "split": None}
                                                          for i in range(10)]))
    train, validation = split_train_validation(pairs)
    assert [p.conversation_id for p in validation] == ["7", "8", "9"] and len(train) == 7
    assert [len(part) for part in split_train_validation(pairs[:7])] == [4, 3]  # ⌊0.7 × 7⌋ = 4, not round(2.1)
    assert [len(part) for part in split_train_validation(pairs[:2])] == [1, 1]
    assert [len(part) for part in split_train_validation(pairs, train_val_ratio=0.5)] == [5, 5]
    marked = [p.with_split("val" if i % 2 else "train") for i, p in enumerate(pairs)]
    train, validation = split_train_validation(marked)
    assert len(train) == len(validation) == 5
    with pytest.raises(ValueError, match="at least 2"):
        split_train_validation(pairs[:1])


def test_group_by_user_keeps_orders_and_names_a_pair_without_user(tmp_path):
    rows = [{**GOOD, "user_id": user, "conversation_id": str(i)} for i, user in enumerate(["b", "a", "b", "c", "a"])]
    grouped = group_by_user(load_pairs(write_lines(tmp_path / "p.jsonl", rows)))
    assert list(grouped) == ["b", "a", "c"]
    assert [[p.conversation_id for p in pairs] for pairs in grouped.values()] == [["0", "2"], ["1", "4"], ["3"]]
    anonymous = load_pairs(write_lines(tmp_path / "q.jsonl", [GOOD, {k: v for k, v in GOOD.items() if k != "user_id"}]))
    with pytest.raises(PairFileError, match=r"q.jsonl, line 2, field 'user_id': missing"):
        group_by_user(anonymous, tmp_path / "q.jsonl")


# ---- rows the official library reads --------------------------------------------------------------------------------
def test_rows_the_official_library_accepts_are_read(tmp_path):
    rows = [{"context": [{"role": "Human", "content": "Hi"}, {"role": "bot", "content": "Hello!"}],
             "chosen": {"role": "bot", "content": "Sure."}, "rejected": {"role": "gpt", "content": "No."},
             "user_id": 1234, "conversation_id": 7.0, "flip": True},
            {"context": {"role": "user", "content": "One turn as an object"},
             "chosen": {"role": "assistant", "content": "A"}, "rejected": {"role": "assistant", "content": "B"},
             "user_id": "1234", "flip": False}]
    first, second = load_pairs(write_lines(tmp_path / "official.jsonl", rows))
    assert [t.role for t in first.context] == ["user", "assistant"] and first.chosen.role == "assistant"
    assert (first.user_id, first.conversation_id, first.flip) == ("1234", "7", True)
    assert second.context[0].content == "One turn as an object" and second.flip is False
    assert first.to_dict()["flip"] is True and "flip" not in load_pairs(write_lines(tmp_path / "g.jsonl",
                                                                                    [GOOD]))[0].to_dict()


@pytest.mark.parametrize("row, field, problem", [
    ({**GOOD, "flip": "yes"}, "flip", "true or false"),
    ({**GOOD, "user_id": True}, "user_id", "must be a string"),
    ({**GOOD, "split": {"name": "train"}}, "split", "must be a string"),
    ({**GOOD, "context": [{"role": "user", "content": ["Hi"]}]}, "context[0].content", "not a string"),
    ({**GOOD, "context": [["user", "Hi"]]}, "context[0]", "must be an object"),
    ({**GOOD, "chosen": {"role": 3, "content": "x"}}, "chosen.role", "not a string"),
    ({**GOOD, "meta": {"a": json.loads("[" * 40 + "1" + "]" * 40)}}, "meta", "nested"),
])
def test_wrongly_typed_fields_anywhere_name_file_line_and_field(tmp_path, row, field, problem):
    path = write_lines(tmp_path / "typed.jsonl", [GOOD, row])
    with pytest.raises(PairFileError) as caught:
        load_pairs(path)
    assert (caught.value.line, caught.value.field_name) == (2, field) and problem in str(caught.value)


@pytest.mark.parametrize("name, text, line", [
    ("deep.jsonl", json.dumps(GOOD) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n", 2),
    ("deep.json", "[\n" + json.dumps(GOOD) + ",\n" + "[" * 100_000 + "]" * 100_000 + "\n]", 3),
    ("deep_field.jsonl", json.dumps(GOOD)[:-1] + ', "meta": ' + "[" * 100_000 + "]" * 100_000 + "}\n", 1),
])
def test_deeply_nested_json_is_a_clear_error_not_a_recursion_error(tmp_path, name, text, line):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PairFileError) as caught:
        load_pairs(path)
    assert caught.value.line == line and "nested too deeply" in str(caught.value) and str(path) in str(caught.value)
