"""synth.evaluation.datasets: local files, raw PRISM, synthetic populations, grouped by user."""

from __future__ import annotations

import json

import pytest

from synth.data import PairFileError, save_pairs
from synth.evaluation.datasets import (
    EvalDataset,
    demographics_text,
    load_eval_dataset,
    load_parquet_pairs,
    load_prism_raw,
    synthetic_dataset,
    write_parquet_pairs,
)
from tests.scripted import make_pairs, make_population


def test_users_keep_first_seen_order_and_their_demographics():
    pairs = make_population(3, 4)
    dataset = EvalDataset.from_pairs(pairs[4:] + pairs[:4], "scripted")
    assert [u.user_id for u in dataset.users] == ["user-1", "user-2", "user-0"]
    assert [u.demographics for u in dataset.users] == [None, None, "Person number 0."]
    assert dataset.n_pairs == 12 and dataset.head(1).users == dataset.users[:1]
    given = EvalDataset.from_pairs(pairs, "scripted", demographics={"user-1": "Given."}, min_pairs=4)
    assert [u.demographics for u in given.users] == ["Person number 0.", "Given.", None]
    with pytest.raises(PairFileError, match="no user has at least 5 pairs"):
        EvalDataset.from_pairs(pairs, "scripted", min_pairs=5)


def test_jsonl_and_parquet_round_trip_grouped_by_user(tmp_path):
    splits = ["train", "train", "train", "val", "test", "test"] * 2
    pairs = [p.with_split(s) for p, s in zip(make_population(2, 6), splits, strict=True)]
    save_pairs(pairs, tmp_path / "bench.jsonl")
    write_parquet_pairs(pairs, tmp_path / "bench.parquet")
    for name in ("bench.jsonl", "bench.parquet"):
        dataset = load_eval_dataset(tmp_path / name)
        assert [u.user_id for u in dataset.users] == ["user-0", "user-1"]
        assert [len(u.pairs) for u in dataset.users] == [6, 6]
        assert dataset.users[0].pairs[0] == pairs[0] and dataset.users[0].pairs[4].split == "test"
        assert dataset.users[0].demographics == "Person number 0." and dataset.users[1].demographics is None
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_rows_are_named_by_file_line_and_field(tmp_path):
    rows = [p.to_dict() for p in make_population(1, 3)]
    rows[1]["chosen"] = {"role": "assistant", "content": ""}
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "bad.parquet")
    with pytest.raises(PairFileError, match=r"bad.parquet, line 2, field 'chosen.content'"):
        load_parquet_pairs(tmp_path / "bad.parquet")
    no_user = [p.to_dict() for p in make_pairs(3)]
    del no_user[2]["user_id"]
    (tmp_path / "anon.jsonl").write_text("".join(json.dumps(r) + "\n" for r in no_user))
    with pytest.raises(PairFileError, match="line 3, field 'user_id'"):
        load_eval_dataset(tmp_path / "anon.jsonl")
    with pytest.raises(PairFileError, match=r"not a \.jsonl"):
        load_eval_dataset(tmp_path / "pairs.csv")


def _prism_message(turn, role, content, score=None, chosen=None, model=None):
    return {"turn": turn, "role": role, "content": content, "score": score, "if_chosen": chosen,
            "model_name": model, "within_turn_id": 0}


def test_raw_prism_ratings_become_pairs_with_demographics(tmp_path):
    conversation = {"conversation_id": "c1", "user_id": "user-9", "conversation_history": [
        _prism_message(0, "user", "Is coffee bad for me?"),
        _prism_message(0, "model", "Moderate coffee is fine for most adults.", 90, True, "a"),
        _prism_message(0, "model", "Coffee is poison.", 20, False, "b"),
        _prism_message(0, "model", "It depends on many factors.", 60, False, "c"),
        _prism_message(0, "model", "Also fine, roughly.", 90, False, "d"),  # ties with the best: no pair
        _prism_message(1, "user", "And tea?"),
        _prism_message(1, "model", "Tea is gentler.", 40, False, "a"),
        _prism_message(1, "model", "Tea has less caffeine, so it is gentler on sleep.", 70, True, "b"),
    ]}
    other = {"conversation_id": "c2", "user_id": "user-8", "conversation_history": [
        _prism_message(0, "user", "Hi"), _prism_message(0, "model", "Hello!", 50, True, "a")]}
    survey = [{"user_id": "user-9", "age": "25-34 years old", "gender": "Female",
               "religion": {"simplified": "No religion"}, "location": {"reside_country": "Canada"},
               "education": "Prefer not to say"}]
    (tmp_path / "conversations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (conversation, other)))
    (tmp_path / "survey.jsonl").write_text("".join(json.dumps(r) + "\n" for r in survey))
    dataset = load_prism_raw(tmp_path, min_pairs=1)
    assert [u.user_id for u in dataset.users] == ["user-9"]
    user = dataset.users[0]
    assert [(p.chosen.content[:8], p.rejected.content[:8]) for p in user.pairs] == [
        ("Moderate", "Coffee i"), ("Moderate", "It depen"), ("Tea has ", "Tea is g")]
    assert [t.content for t in user.pairs[2].context] == [
        "Is coffee bad for me?", "Moderate coffee is fine for most adults.", "And tea?"]
    assert "Gender: Female" in user.demographics and "Lives in: Canada" in user.demographics
    assert "Religion: No religion" in user.demographics and "Education" not in user.demographics
    assert demographics_text({"user_id": "x"}) == ""


def test_raw_prism_folder_needs_five_pairs_per_user_by_default(tmp_path):
    history = [_prism_message(0, "user", "Q"), _prism_message(0, "model", "good", 80, True),
               _prism_message(0, "model", "bad", 10, False)]
    (tmp_path / "conversations.jsonl").write_text(json.dumps({"conversation_id": "c", "user_id": "u",
                                                              "conversation_history": history}) + "\n")
    with pytest.raises(PairFileError, match="at least 5 pairs"):
        load_eval_dataset(tmp_path)


def test_synthetic_population_follows_each_users_taste():
    dataset, users = synthetic_dataset(4, 6, seed=1)
    assert [len(u.pairs) for u in dataset.users] == [6] * 4
    with open("assets/pair_bank.jsonl", encoding="utf-8") as lines:
        bank = {json.loads(line)["prompt"]: json.loads(line) for line in lines}
    for user, data in zip(users, dataset.users, strict=True):
        for pair in data.pairs:
            row = bank[pair.prompt]
            preferred = row["responses"][user.poles[row["dimension"]]]["content"]
            assert pair.chosen.content == preferred
        assert data.demographics.startswith("Simulated user who prefers")
    assert synthetic_dataset(4, 6, seed=1)[0] == dataset


