"""The model runner: batched greedy decoding equals transformers' generate, prefixes are computed once and reused
(by prefills, by scorings after a generation, on sliding-window layers), scoring is the same batched or alone, and
batch capacity follows the device. The runner is driven through a default engine, whose scheduler calls it."""

from __future__ import annotations

import os
from itertools import chain

import pytest

from synth.lm.runner import kv_bytes_per_token
from synth.lm.sampling import GenerationParams
from tests.tiny_lm import PROMPTS, SHARED, TEST_DEVICE, reference_greedy

pytest_plugins = ["tests.lm_fixtures"]  # the tiny models and engines


def test_batched_greedy_equals_sequential_reference(engine):
    lengths = [3 + (i % 4) * 5 for i in range(len(PROMPTS))]  # per-request max tokens
    batched = engine.generate(PROMPTS, [GenerationParams(max_new_tokens=n) for n in lengths])
    for prompt, n, result in zip(PROMPTS, lengths, batched, strict=True):
        assert result.text == reference_greedy(engine, prompt, n)
        assert result.completion_tokens <= n


def test_a_shared_prefix_is_computed_once(engine):
    prompts = [SHARED + f"User: question {i}?\n\nAssistant:" for i in range(4)]  # equal lengths
    shared = len(engine.prompts.encode(SHARED + "User: question "))
    suffix = len(engine.prompts.encode(prompts[0])) - shared
    runner = engine.runner
    results = engine.generate(prompts, [GenerationParams(max_new_tokens=5)] * 4)
    assert runner.computed_tokens == shared + 4 * suffix
    assert runner.reused_tokens == 4 * shared
    assert [r.text for r in results] == [reference_greedy(engine, p, 5) for p in prompts]


def distinct_prefixes(sequences) -> int:
    """Tokens in the trie of ``sequences``: what a prefill that never computes a token twice runs."""
    return len({tuple(ids[:end]) for ids in sequences for end in range(1, len(ids) + 1)})


def test_each_branch_of_a_stage_is_computed_once(engine):
    """A fit's stage in small: shared instructions, then two candidates' demos, then three questions each. The
    instructions are computed once, each candidate's demos once, each question once."""
    demos = ["Demo: the reply that answers first, with sources, wins\n\n",
             "Demo: the shorter and kinder reply wins for this user.\n\n"]
    prompts = [SHARED + demo + f"User: question {i}?\n\nAssistant:" for demo in demos for i in range(3)]
    encoded = [engine.prompts.encode(prompt) for prompt in prompts]
    assert len({len(ids) for ids in encoded}) == 1  # equal lengths: no padding in any batch
    runner = engine.runner
    results = engine.generate(prompts, [GenerationParams(max_new_tokens=4)] * len(prompts))
    assert runner.computed_tokens == distinct_prefixes(encoded)
    # element-wise common prefixes of the token-id lists
    branches = [os.path.commonprefix(encoded), os.path.commonprefix(encoded[:3]),  # noqa: RUF071
                os.path.commonprefix(encoded[3:])]  # noqa: RUF071
    # each branch ran once as a row of its own, the candidates' starting from the instructions
    assert runner.reused_tokens == sum(map(len, encoded + branches)) - distinct_prefixes(encoded)
    assert [r.text for r in results] == [reference_greedy(engine, p, 4) for p in prompts]


def test_rows_with_little_left_to_compute_are_prefilled_together(tiny_model, make_engine):
    """A padded pass computes every row as far back as its row with most left to compute: two continuations of
    stored prompts must not share a pass with two new prompts of the same length."""
    engine = make_engine(tiny_model, cpu_prefill_rows=2, gpu_prefill_rows=2)
    stored = [PROMPTS[0], PROMPTS[5]]
    continued = [prompt + " more" for prompt in stored]
    new = [prompt.swapcase() for prompt in continued]  # same length, sharing nothing with the stored prompts
    engine.generate(stored, [GenerationParams(max_new_tokens=1)] * 2)  # one new token: none run, none stored
    computed = engine.runner.computed_tokens
    engine.generate([continued[0], new[0], continued[1], new[1]], [GenerationParams(max_new_tokens=1)] * 4)
    assert engine.runner.computed_tokens - computed == (
        2 * len(" more") + sum(len(engine.prompts.encode(p)) for p in new))


def test_sliding_window_scoring_continues_remembered_prompts(sliding_model, make_engine):
    engine = make_engine(sliding_model)
    prompts = [SHARED + prompt for prompt in PROMPTS[:4]]
    continuations = [prompt + " Verdict:" for prompt in prompts]
    fresh = engine.choice_probabilities(continuations, ["a", "b"])
    engine.generate(prompts, [GenerationParams(max_new_tokens=2)] * 4)
    before = engine.runner.reused_tokens
    reused = engine.choice_probabilities(continuations, ["a", "b"])
    assert list(chain.from_iterable(reused)) == pytest.approx(list(chain.from_iterable(fresh)), abs=1e-5)
    assert engine.runner.reused_tokens - before == sum(len(engine.prompts.encode(p)) for p in prompts)


def test_batched_choice_probabilities_equal_one_by_one(engine):
    for choices in (["a", "b"], ["ab", "ac"]):  # distinct first tokens / shared first token
        batched = engine.choice_probabilities(PROMPTS[:8], choices)
        for prompt, probabilities in zip(PROMPTS[:8], batched, strict=True):
            alone = engine.choice_probabilities([prompt], choices)[0]
            assert probabilities == pytest.approx(alone, abs=1e-5)
            assert sum(probabilities) == pytest.approx(1.0)


def test_a_choice_without_tokens_is_refused(engine):
    with pytest.raises(ValueError, match="at least one token"):
        engine.choice_probabilities(PROMPTS[:1], ["a", ""])


def test_scoring_after_generation_reuses_the_prompt_and_the_reasoning(tiny_model, make_engine):
    """A judge's verdict is scored on its prompt + its own reasoning: both come from the finished row's states."""
    engine = make_engine(tiny_model)
    generated = engine.generate(PROMPTS[:6], [GenerationParams(max_new_tokens=3)] * 6)
    continuations = [prompt + result.text + " Verdict:"
                     for prompt, result in zip(PROMPTS[:6], generated, strict=True)]
    ran = sum(len(engine.prompts.encode(p)) + result.completion_tokens - 1
              for p, result in zip(PROMPTS[:6], generated, strict=True))
    before = engine.runner.reused_tokens
    remembered = {choices: engine.choice_probabilities(continuations, choices)
                  for choices in (("a", "b"), ("ab", "ac"))}
    # each scoring row started from its whole prompt and reasoning: once for ("a", "b"), twice for ("ab", "ac")
    assert engine.runner.reused_tokens - before == 3 * ran
    fresh_engine = make_engine(tiny_model)  # an empty prefix store
    for choices, expected in remembered.items():
        fresh = fresh_engine.choice_probabilities(continuations, choices)
        assert list(chain.from_iterable(fresh)) == pytest.approx(list(chain.from_iterable(expected)), abs=1e-5)


def test_batch_capacity_follows_the_config_and_kv_size(tiny_model, make_engine):
    import torch

    runner = make_engine(tiny_model, cpu_batch_rows=5, gpu_batch_rows=7).runner
    if TEST_DEVICE == "cuda":  # bounded by free memory, then by the configured rows
        assert 1 <= runner.batch_capacity(10_000) <= 7
    else:
        assert runner.batch_capacity(10_000) == 5
    # 2 layers x (key + value) x 2 kv heads x head_dim 16 x 4 bytes
    assert kv_bytes_per_token(tiny_model.model.config, torch.float32) == 2 * 2 * 2 * 16 * 4


@pytest.mark.timeout(120)
def test_a_huge_max_tokens_stops_at_the_context_and_reserves_no_cache_beyond_it(tiny_model, make_engine, monkeypatch):
    """An uploaded artifact asked for 50,000,000 new tokens (issue 14): the reply ends at the model's context (the
    tiny model's, made 200 tokens here to keep the test short), and no cache buffer is ever made wider than it."""
    from synth.lm import kv

    context = 200
    monkeypatch.setattr(tiny_model.model.config, "max_position_embeddings", context)
    widest: list[int] = []
    set_buffers = kv.GrowingLayer._set_buffers

    def watched(layer, keys, values):
        widest.append(keys.shape[-2])
        if keys.shape[-2] > context:
            raise MemoryError(f"a cache buffer of {keys.shape[-2]:,} columns for a {context}-token context")
        set_buffers(layer, keys, values)

    monkeypatch.setattr(kv.GrowingLayer, "_set_buffers", watched)
    engine = make_engine(tiny_model)
    engine.runner.eos_ids = set()  # the random model must not stop early: decoding runs to the limit
    prompts = [PROMPTS[3], SHARED + PROMPTS[4]]  # rows of different lengths share the batch
    results = engine.generate(prompts, [GenerationParams(max_new_tokens=50_000_000)] * 2)
    for prompt, result in zip(prompts, results, strict=True):
        assert result.finish_reason == "length"
        assert len(engine.prompts.encode(prompt)) + result.completion_tokens == context
    [text] = engine.as_lm(max_tokens=50_000_000, cache=False)("question 1?")  # the same through DSPy
    assert text and widest and max(widest) <= context
    assert engine.context_tokens == context


def test_the_context_bound_comes_from_the_engine_config_when_smaller(tiny_model, make_engine):
    engine = make_engine(tiny_model, max_context_tokens=48)
    engine.runner.eos_ids = set()
    prompt = PROMPTS[1]
    [result] = engine.generate([prompt], [GenerationParams(max_new_tokens=1_000)])
    assert engine.context_tokens == 48
    assert len(engine.prompts.encode(prompt)) + result.completion_tokens == 48
    with pytest.raises(ValueError, match="47"):  # a prompt that leaves no room for a reply is refused
        engine.generate(["x" * 100], [GenerationParams(max_new_tokens=5)])
