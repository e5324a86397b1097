"""The batching engine: each caller gets its own answer, batched equals sequential, errors stay with their caller,
and close() never hangs. Fast tests use a tiny randomly initialised Llama built here (no downloads); one slow
test runs the packaged Gemma model."""

from __future__ import annotations

import importlib.machinery
import os
import string
import sys
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from itertools import chain

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from synth.lm import fit_threads, gpu_task, make_engine
from synth.lm import local as local_module
from synth.lm.batching import BatchingEngine
from synth.lm.local import (
    CPU_BATCH_CAP,
    GPU_BATCH_CAP,
    EngineClosed,
    GenerationParams,
    LocalEngine,
    LocalModel,
    StopOnText,
    kv_bytes_per_token,
)

# The tiny models run on CPU unless SYNTH_TEST_DEVICE names another device (a GPU check of the engine: fp32 there too).
TEST_DEVICE = os.environ.get("SYNTH_TEST_DEVICE", "cpu")
PROMPTS = [f"User: question {i} {'abc' * (i % 5)}?\n\nAssistant:" for i in range(16)]


def build_tiny_model(directory, sliding_window: int | None = None) -> str:
    """A 2-layer Llama (or, with ``sliding_window``, a Gemma 3 whose first layer attends to that many tokens
    only) with a character vocabulary, saved like any Hugging Face checkpoint."""
    import torch
    from tokenizers import Tokenizer, decoders, models
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    characters = list(string.printable)
    vocab = {token: index for index, token in enumerate(specials + characters)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>")
    torch.manual_seed(0)
    shape = {"vocab_size": len(vocab), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512, "pad_token_id": 0,
             "bos_token_id": 1, "eos_token_id": 2}
    if sliding_window:
        model = Gemma3ForCausalLM(Gemma3TextConfig(**shape, head_dim=16, sliding_window=sliding_window,
                                                   layer_types=["sliding_attention", "full_attention"]))
    else:
        model = LlamaForCausalLM(LlamaConfig(**shape))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> LocalModel:
    directory = tmp_path_factory.mktemp("tiny-llama")
    return LocalModel(build_tiny_model(directory), device=TEST_DEVICE, dtype="float32").load()


@pytest.fixture(scope="module")
def sliding_model(tmp_path_factory) -> LocalModel:
    directory = tmp_path_factory.mktemp("tiny-gemma")
    return LocalModel(build_tiny_model(directory, sliding_window=8), device=TEST_DEVICE, dtype="float32").load()


def reference_greedy(model: LocalModel, prompt: str, max_new_tokens: int) -> str:
    """One prompt through transformers' own generate: the semantics the batched path must keep."""
    import torch

    ids = torch.tensor([model.encode(prompt)], device=model.model.device)
    output = model.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                  max_new_tokens=max_new_tokens, pad_token_id=model.tokenizer.pad_token_id,
                                  temperature=None, top_p=None, top_k=None)
    return model.tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True)


def test_batched_greedy_equals_sequential_reference(tiny_model):
    lengths = [3 + (i % 4) * 5 for i in range(len(PROMPTS))]  # per-request max tokens
    batched = tiny_model.generate(PROMPTS, [GenerationParams(max_new_tokens=n) for n in lengths])
    for prompt, n, result in zip(PROMPTS, lengths, batched, strict=True):
        assert result.text == reference_greedy(tiny_model, prompt, n)
        assert result.completion_tokens <= n


SHARED = "System: you judge replies for one person. Read both and name the one they prefer.\n\n"


@pytest.mark.parametrize("model_name", ["tiny_model", "sliding_model"])
def test_rows_join_as_others_finish_and_equal_the_reference(model_name, request, monkeypatch):
    """Capacity 3 for 10 prompts: rows join mid-decoding into a cache of another width, some starting from the
    shared instructions; on a sliding-window model the prompts are longer than the window."""
    model = request.getfixturevalue(model_name)
    monkeypatch.setattr(local_module, "CPU_BATCH_CAP", 3)
    monkeypatch.setattr(local_module, "GPU_BATCH_CAP", 3)
    prompts = [SHARED + prompt for prompt in PROMPTS[:10]]
    lengths = [2 + (i * 7) % 13 for i in range(10)]
    results = model.generate(prompts, [GenerationParams(max_new_tokens=n) for n in lengths])
    for prompt, n, result in zip(prompts, lengths, results, strict=True):
        assert result.text == reference_greedy(model, prompt, n)


def test_a_shared_prefix_is_computed_once(tiny_model):
    prompts = [SHARED + f"User: question {i}?\n\nAssistant:" for i in range(4)]  # equal lengths
    shared = len(tiny_model.encode(SHARED + "User: question "))
    suffix = len(tiny_model.encode(prompts[0])) - shared
    tiny_model.prefix_store.clear()
    computed, reused = tiny_model.computed_tokens, tiny_model.reused_tokens
    results = tiny_model.generate(prompts, [GenerationParams(max_new_tokens=5)] * 4)
    assert tiny_model.computed_tokens - computed == shared + 4 * suffix
    assert tiny_model.reused_tokens - reused == 4 * shared
    assert [r.text for r in results] == [reference_greedy(tiny_model, p, 5) for p in prompts]


def distinct_prefixes(sequences) -> int:
    """Tokens in the trie of ``sequences``: what a prefill that never computes a token twice runs."""
    return len({tuple(ids[:end]) for ids in sequences for end in range(1, len(ids) + 1)})


def test_each_branch_of_a_stage_is_computed_once(tiny_model):
    """A fit's stage in small: shared instructions, then two candidates' demos, then three questions each. The
    instructions are computed once, each candidate's demos once, each question once."""
    demos = ["Demo: the reply that answers first, with sources, wins\n\n",
             "Demo: the shorter and kinder reply wins for this user.\n\n"]
    prompts = [SHARED + demo + f"User: question {i}?\n\nAssistant:" for demo in demos for i in range(3)]
    encoded = [tiny_model.encode(prompt) for prompt in prompts]
    assert len({len(ids) for ids in encoded}) == 1  # equal lengths: no padding in any batch
    tiny_model.prefix_store.clear()
    computed, reused = tiny_model.computed_tokens, tiny_model.reused_tokens
    results = tiny_model.generate(prompts, [GenerationParams(max_new_tokens=4)] * len(prompts))
    assert tiny_model.computed_tokens - computed == distinct_prefixes(encoded)
    # element-wise common prefixes of the token-id lists
    branches = [os.path.commonprefix(encoded), os.path.commonprefix(encoded[:3]),  # noqa: RUF071
                os.path.commonprefix(encoded[3:])]  # noqa: RUF071
    # each branch ran once as a row of its own, the candidates' starting from the instructions
    assert tiny_model.reused_tokens - reused == sum(map(len, encoded + branches)) - distinct_prefixes(encoded)
    assert [r.text for r in results] == [reference_greedy(tiny_model, p, 4) for p in prompts]


def test_rows_with_little_left_to_compute_are_prefilled_together(tiny_model, monkeypatch):
    """A padded pass computes every row as far back as its row with most left to compute: two continuations of
    stored prompts must not share a pass with two new prompts of the same length."""
    monkeypatch.setattr(local_module, "CPU_PREFILL_ROWS", 2)
    monkeypatch.setattr(local_module, "GPU_BATCH_CAP", 2)
    stored = [PROMPTS[0], PROMPTS[5]]
    continued = [prompt + " more" for prompt in stored]
    new = [prompt.swapcase() for prompt in continued]  # same length, sharing nothing with the stored prompts
    tiny_model.prefix_store.clear()
    tiny_model.generate(stored, [GenerationParams(max_new_tokens=1)] * 2)  # one new token: none run, none stored
    computed = tiny_model.computed_tokens
    tiny_model.generate([continued[0], new[0], continued[1], new[1]], [GenerationParams(max_new_tokens=1)] * 4)
    assert tiny_model.computed_tokens - computed == 2 * len(" more") + sum(len(tiny_model.encode(p)) for p in new)


def test_prefix_store_keeps_shared_parts_once_and_reuses_part_of_any_sequence():
    import torch

    from synth.lm.kv import PrefixStore

    def states(ids):  # one layer; a token's key is its id, its value minus its id
        column = torch.tensor(ids, dtype=torch.float32).view(1, 1, len(ids), 1)
        return [(column, -column)]

    store = PrefixStore(max_bytes=1 << 20)
    store.put([1, 2, 3, 4], states([1, 2, 3, 4]))
    store.put([1, 2, 5], states([1, 2, 5]))
    store.put([1, 2], states([1, 2]))  # already inside the tree: nothing new
    assert store.stored_tokens == 5 and len(store) == 3  # [1, 2] -> [3, 4] | [5]
    assert store.nbytes == 2 * 5 * 4

    count, pieces = store.longest_prefix([1, 2, 3, 9], limit=10)  # part of a stored sequence
    assert count == 3
    keys = torch.cat([piece[0][0] for piece in pieces], dim=-2)[..., :count, :]
    assert keys.flatten().tolist() == [1, 2, 3]
    assert store.longest_prefix([1, 2, 3, 4], limit=2)[0] == 2
    assert store.longest_prefix([7, 1], limit=2) == (0, [])

    state = states([1, 2, 3, 4])
    store.put([1, 2, 3, 4], state)
    state[0][0].fill_(0)  # the store holds copies, not the caller's tensors
    assert store.longest_prefix([1, 2, 3, 4], limit=4)[1][1][0][0].flatten().tolist() == [3, 4]


def test_prefix_store_drops_least_recently_used_leaves_first():
    import torch

    from synth.lm.kv import PrefixStore

    def states(count):
        return [(torch.zeros(1, 1, count, 1), torch.zeros(1, 1, count, 1))]  # 8 bytes a token

    store = PrefixStore(max_bytes=8 * 9)
    store.put([1, 2, 3, 4], states(4))
    store.put([1, 2, 5, 6], states(4))  # 6 tokens stored: [1, 2] -> [3, 4] | [5, 6]
    store.longest_prefix([1, 2, 3, 4], limit=4)  # [3, 4] is now used more recently than [5, 6]
    store.put([1, 2, 7, 8, 9, 10], states(6))  # 10 tokens: over the limit, the oldest leaf goes
    assert store.longest_prefix([1, 2, 5, 6], limit=4)[0] == 2
    assert store.longest_prefix([1, 2, 3, 4], limit=4)[0] == 4
    assert store.nbytes == 8 * 8 and store.stored_tokens == 8
    store.put([20] * 12, states(12))  # larger than the store: kept while it is the newest, everything else goes
    assert store.stored_tokens == 12 and store.longest_prefix([20] * 12, limit=12)[0] == 12


def test_sliding_window_scoring_continues_remembered_prompts(sliding_model):
    prompts = [SHARED + prompt for prompt in PROMPTS[:4]]
    continuations = [prompt + " Verdict:" for prompt in prompts]
    sliding_model.prefix_store.clear()
    fresh = sliding_model.choice_probabilities(continuations, ["a", "b"])
    sliding_model.generate(prompts, [GenerationParams(max_new_tokens=2)] * 4)
    before = sliding_model.reused_tokens
    reused = sliding_model.choice_probabilities(continuations, ["a", "b"])
    assert list(chain.from_iterable(reused)) == pytest.approx(list(chain.from_iterable(fresh)), abs=1e-5)
    assert sliding_model.reused_tokens - before == sum(len(sliding_model.encode(p)) for p in prompts)


def test_growing_layer_keeps_its_columns_through_growth_selection_and_trimming():
    import torch

    from synth.lm.kv import GrowingLayer

    layer = GrowingLayer(reserve=1)
    first = torch.arange(2 * 1 * 3 * 2, dtype=torch.float32).view(2, 1, 3, 2)
    layer.update(first, -first)
    for step in range(5):  # outgrows the reserved column
        column = torch.full((2, 1, 1, 2), 100.0 + step)
        keys, values = layer.update(column, -column)
    assert layer.get_seq_length() == 8 and keys.shape == (2, 1, 8, 2)
    assert torch.equal(keys[:, :, :3], first) and torch.equal(values[:, :, 3:], -keys[:, :, 3:])
    layer.batch_select_indices(torch.tensor([1]))
    layer.drop_leading(2)
    assert layer.get_seq_length() == 6 and torch.equal(layer.keys[0, 0, 0], first[1, 0, 2])
    keys, _ = layer.update(torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))
    assert keys.shape == (1, 1, 7, 2) and torch.equal(keys[0, 0, -2], torch.full((2,), 104.0))

    sliding = GrowingLayer(window=3)
    sliding.update(first, first)
    assert sliding.get_mask_sizes(query_length=1) == (3, 1)  # 2 visible columns + the new one, from column 1
    keys, _ = sliding.update(column, column)
    assert keys.shape == (2, 1, 3, 2) and torch.equal(keys[:, :, :2], first[:, :, 1:])
    assert sliding.get_seq_length() == 4 and sliding.keys.shape == (2, 1, 4, 2)  # everything is still stored


def test_stop_string_cuts_its_row_only(tiny_model):
    free = tiny_model.generate(PROMPTS[:2], [GenerationParams(max_new_tokens=20)] * 2)
    stop = free[0].text[5:8]
    assert len(stop) == 3
    stopped = tiny_model.generate(PROMPTS[:2], [GenerationParams(max_new_tokens=20, stop=(stop,)),
                                                GenerationParams(max_new_tokens=20)])
    assert stopped[0].text == free[0].text[: free[0].text.index(stop)]
    assert stopped[0].finish_reason == "stop"
    assert stopped[0].completion_tokens < free[0].completion_tokens
    assert stopped[1] == free[1]


def test_stop_check_decodes_the_tail_only_after_a_token_that_can_end_a_stop(tiny_model, monkeypatch):
    tokenizer = tiny_model.tokenizer
    pieces, tails = [], []
    decode = tokenizer.decode

    def recording_decode(ids, **kwargs):
        text = decode(ids, **kwargs)
        (tails if kwargs.get("skip_special_tokens") else pieces).append(text)
        return text

    monkeypatch.setattr(tokenizer, "decode", recording_decode)
    checker = StopOnText(tokenizer, ("xyz",))
    ids = tokenizer("zazbxyzq", add_special_tokens=False)["input_ids"]
    assert len(ids) == 8
    answers = [checker(ids[: end + 1]) for end in range(len(ids))]
    assert answers == [False] * 6 + [True, False]  # asked after each token: "xyz" completes at the 7th
    assert tails == ["z", "zaz", "zazbxyz"]  # the tail is decoded only after a "z"
    assert sorted(pieces) == sorted("zabxyq")  # each token's own text once


def test_sampling_is_seeded_per_request_whatever_the_batch(tiny_model):
    params = GenerationParams(max_new_tokens=12, temperature=1.0)
    alone = tiny_model.generate([PROMPTS[3]], [params])[0]
    in_batch = tiny_model.generate(PROMPTS[:6], [params] * 6)[3]
    assert alone == in_batch


def test_batched_choice_probabilities_equal_one_by_one(tiny_model):
    for choices in (["a", "b"], ["ab", "ac"]):  # distinct first tokens / shared first token
        batched = tiny_model.choice_probabilities(PROMPTS[:8], choices)
        for prompt, probabilities in zip(PROMPTS[:8], batched, strict=True):
            alone = tiny_model.choice_probabilities([prompt], choices)[0]
            assert probabilities == pytest.approx(alone, abs=1e-5)
            assert sum(probabilities) == pytest.approx(1.0)


def test_scoring_after_generation_reuses_the_prompt_and_the_reasoning(tiny_model):
    """A judge's verdict is scored on its prompt + its own reasoning: both come from the finished row's states."""
    tiny_model.prefix_store.clear()
    generated = tiny_model.generate(PROMPTS[:6], [GenerationParams(max_new_tokens=3)] * 6)
    continuations = [prompt + result.text + " Verdict:"
                     for prompt, result in zip(PROMPTS[:6], generated, strict=True)]
    ran = sum(len(tiny_model.encode(p)) + result.completion_tokens - 1
              for p, result in zip(PROMPTS[:6], generated, strict=True))
    before = tiny_model.reused_tokens
    remembered = {choices: tiny_model.choice_probabilities(continuations, choices)
                  for choices in (("a", "b"), ("ab", "ac"))}
    # each scoring row started from its whole prompt and reasoning: once for ("a", "b"), twice for ("ab", "ac")
    assert tiny_model.reused_tokens - before == 3 * ran
    tiny_model.prefix_store.clear()
    for choices, expected in remembered.items():
        fresh = tiny_model.choice_probabilities(continuations, choices)
        assert list(chain.from_iterable(fresh)) == pytest.approx(list(chain.from_iterable(expected)), abs=1e-5)


@pytest.mark.timeout(120)
def test_sixteen_threads_each_get_their_own_answer(tiny_model):
    expected = dict(zip(PROMPTS, LocalEngine(tiny_model).generate(
        PROMPTS, [GenerationParams(max_new_tokens=8)] * len(PROMPTS)), strict=True))
    engine = BatchingEngine(tiny_model)
    try:
        def call(prompt):
            if PROMPTS.index(prompt) % 2:
                return prompt, engine.choice_probabilities([prompt], ["a", "b"])[0]
            return prompt, engine.generate([prompt], [GenerationParams(max_new_tokens=8)])[0]

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(call, PROMPTS * 2))
        assert len(answers) == 32
        for prompt, answer in answers:
            if PROMPTS.index(prompt) % 2:
                assert answer == pytest.approx(tiny_model.choice_probabilities([prompt], ["a", "b"])[0], abs=1e-5)
            else:
                assert answer == expected[prompt]
        assert engine.prefills_run < 32  # calls were really grouped
    finally:
        engine.close()


@pytest.mark.timeout(120)
def test_a_short_request_does_not_wait_for_a_long_one(tiny_model):
    engine = BatchingEngine(tiny_model)
    try:
        with ThreadPoolExecutor(2) as pool:
            long = pool.submit(engine.generate, [PROMPTS[0]], [GenerationParams(max_new_tokens=300)])
            while engine.decode_steps < 5:
                time.sleep(0.01)
            short = engine.generate([PROMPTS[1]], [GenerationParams(max_new_tokens=3)])[0]
            steps_when_short_done, long_done_then = engine.decode_steps, long.done()
            assert long.result()[0].completion_tokens == 300
        assert short.completion_tokens == 3 and not long_done_then
        assert steps_when_short_done < 300  # it joined the running batch instead of queueing behind it
    finally:
        engine.close()


@pytest.mark.timeout(120)
def test_an_erroring_request_fails_only_its_caller(tiny_model, monkeypatch):
    encode = tiny_model.encode

    def fragile_encode(text):
        if "BOOM" in text:
            raise ValueError("cannot encode BOOM")
        return encode(text)

    monkeypatch.setattr(tiny_model, "encode", fragile_encode)
    engine = BatchingEngine(tiny_model)
    prompts = [*PROMPTS[:7], "User: BOOM\n\nAssistant:"]
    try:
        def call(prompt):
            try:
                return engine.generate([prompt], [GenerationParams(max_new_tokens=4)])[0]
            except ValueError as error:
                return error

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(call, prompts))
        assert isinstance(answers[-1], ValueError) and "BOOM" in str(answers[-1])
        assert all(not isinstance(a, Exception) for a in answers[:-1])
        assert engine.generate([PROMPTS[0]], [GenerationParams(max_new_tokens=4)])[0] == answers[0]
    finally:
        engine.close()


@pytest.mark.timeout(60)
def test_close_answers_every_caller_and_does_not_hang(tiny_model):
    engine = BatchingEngine(tiny_model, max_pending=4)
    outcomes: list[object] = []
    lock = threading.Lock()

    def call(prompt):
        try:
            result = engine.generate([prompt], [GenerationParams(max_new_tokens=400)])[0]
        except EngineClosed as error:
            result = error
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=call, args=(p,)) for p in PROMPTS]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    started = time.perf_counter()
    engine.close()
    for thread in threads:
        thread.join(10)
    assert time.perf_counter() - started < 15
    assert not any(thread.is_alive() for thread in threads)
    assert len(outcomes) == len(PROMPTS)
    assert any(isinstance(o, EngineClosed) for o in outcomes)
    assert not engine._worker.is_alive()
    with pytest.raises(EngineClosed):
        engine.generate([PROMPTS[0]], [GenerationParams(max_new_tokens=1)])
    engine.close()  # twice is fine


def test_make_engine_batches_unless_disabled(tiny_model, monkeypatch):
    monkeypatch.delenv("SYNTH_BATCHING", raising=False)
    engine = make_engine(tiny_model)
    assert isinstance(engine, BatchingEngine)
    engine.close()
    monkeypatch.setenv("SYNTH_BATCHING", "0")
    assert type(make_engine(tiny_model)) is LocalEngine


def test_batch_capacity_on_cpu_and_kv_size(tiny_model):
    import torch

    if TEST_DEVICE == "cuda":  # bounded by free memory, then by the cap
        assert 1 <= tiny_model.batch_capacity(10_000) <= GPU_BATCH_CAP
    else:
        assert tiny_model.batch_capacity(10_000) == CPU_BATCH_CAP
    # 2 layers x (key + value) x 2 kv heads x head_dim 16 x 4 bytes
    assert kv_bytes_per_token(tiny_model.model.config, torch.float32) == 2 * 2 * 2 * 16 * 4


def test_fits_keep_a_whole_stage_in_flight_only_on_a_gpu(tiny_model):
    def lm_over(model):
        return types.SimpleNamespace(engine=types.SimpleNamespace(local_model=model))

    assert fit_threads(types.SimpleNamespace(model="openai/gpt-4o-mini")) == 16  # remote: no engine
    assert fit_threads(lm_over(tiny_model)) == (GPU_BATCH_CAP if TEST_DEVICE == "cuda" else 16)
    not_loaded_yet = types.SimpleNamespace(is_loaded=False, device_request="cuda")
    assert fit_threads(lm_over(not_loaded_yet)) == GPU_BATCH_CAP


def test_load_in_background_resolves_to_the_model(tmp_path):
    model = LocalModel(build_tiny_model(tmp_path / "m"), device="cpu")
    future = model.load_in_background()
    assert future.result(timeout=60) is model and model.is_loaded


def test_gpu_task_wraps_only_when_spaces_is_present(monkeypatch):
    def fit():
        return "done"

    monkeypatch.setitem(sys.modules, "spaces", None)
    monkeypatch.delitem(sys.modules, "spaces")
    if importlib.util.find_spec("spaces") is None:
        assert gpu_task(fit) is fit
    seen = {}
    fake = types.ModuleType("spaces")
    fake.__spec__ = importlib.machinery.ModuleSpec("spaces", None)

    def fake_gpu(duration):
        seen["duration"] = duration
        return lambda function: (lambda: "on gpu: " + function())

    fake.GPU = fake_gpu
    monkeypatch.setitem(sys.modules, "spaces", fake)
    assert gpu_task(duration=300)(fit)() == "on gpu: done" and seen["duration"] == 300


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_packaged_model_batched_equals_sequential():
    from synth.lm import packaged_model_path

    # float32: there batched greedy decoding must equal transformers' generate token for token (in bf16 the
    # batch's shape changes rounding); the app and CLI tests run the bf16 default end to end.
    model = LocalModel(packaged_model_path(), dtype="float32").load()
    prompts = PROMPTS[:4]
    batched = model.generate(prompts, [GenerationParams(max_new_tokens=6)] * 4)
    for prompt, result in zip(prompts, batched, strict=True):
        assert result.text == reference_greedy(model, prompt, 6)
    engine = BatchingEngine(model)
    try:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda p: engine.score_choices([{"role": "user", "content": p}], "Verdict: ",
                                                                   ["First", "Second"]), prompts * 4))
        for prompt, answer in zip(prompts * 4, answers, strict=True):
            alone = model.choice_probabilities([model.render([{"role": "user", "content": prompt}],
                                                             assistant_prefix="Verdict: ")], ["First", "Second"])[0]
            assert answer == pytest.approx(alone, abs=1e-4)
    finally:
        engine.close()
