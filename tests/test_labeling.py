"""The pair bank loader: the shipped bank loads, and an edited bank with a broken row fails naming line and field."""

import json

import pytest

from components.labeling import load_bank


def test_shipped_bank_loads_with_two_different_replies_per_prompt():
    bank = load_bank()
    assert len(bank) == 41
    assert len({pair.id for pair in bank}) == len(bank)
    assert all(pair.prompt and pair.responses[0] != pair.responses[1] for pair in bank)


@pytest.mark.parametrize(("row", "message"), [
    ("{not json", r"bank\.jsonl:2: not valid JSON"),
    ("[1, 2]", r"bank\.jsonl:2: expected a JSON object"),
    (json.dumps({"id": "x", "topic": "t", "dimension": "d", "responses": []}),
     r"bank\.jsonl:2: missing field 'prompt'"),
    (json.dumps({"id": "x", "topic": "t", "dimension": "d", "prompt": "p", "responses": [{"content": "a"}]}),
     r"bank\.jsonl:2: field 'responses' must hold two objects"),
])
def test_broken_bank_row_names_file_line_and_field(tmp_path, row, message):
    good = {"id": "a", "topic": "t", "dimension": "d", "prompt": "p",
            "responses": [{"content": "one"}, {"content": "two"}]}
    path = tmp_path / "bank.jsonl"
    path.write_text(json.dumps(good) + "\n" + row + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_bank(path)
