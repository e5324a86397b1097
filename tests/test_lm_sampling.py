"""Sampling and stops: greedy at temperature 0, sampling seeded by the request whatever its batch, stop strings that
end only their own row, checked cheaply after each token."""

from __future__ import annotations

import torch

from synth.lm.sampling import GenerationParams, StopOnText, cut_at_stop, pick_tokens, seeded_generator
from tests.tiny_lm import PROMPTS

pytest_plugins = ["tests.lm_fixtures"]  # the tiny models and engines


def test_pick_tokens_is_greedy_at_temperature_zero_and_seeded_otherwise():
    logits = torch.tensor([[0.0, 3.0, 1.0], [0.0, 0.0, 0.0]])
    draws = {pick_tokens(logits.clone(), [0.0, 1.0], [None, seeded_generator("same prompt", "cpu")])[1].item()
             for _ in range(5)}
    assert pick_tokens(logits.clone(), [0.0, 0.0], [None, None]).tolist() == [1, 0]
    assert len(draws) == 1  # the same prompt seeds the same draw
    many = {pick_tokens(logits.clone(), [0.0, 1.0], [None, seeded_generator(f"prompt {i}", "cpu")])[1].item()
            for i in range(30)}
    assert many == {0, 1, 2}  # a uniform row sampled with different seeds


def test_cut_at_stop_trims_at_the_first_stop_string():
    assert cut_at_stop("reason [[ ## preferred ## ]] First", ("[[ ## preferred ## ]]", "First")) == ("reason ", True)
    assert cut_at_stop("no stop here", ("STOP", "")) == ("no stop here", False)


def test_stop_string_cuts_its_row_only(engine):
    free = engine.generate(PROMPTS[:2], [GenerationParams(max_new_tokens=20)] * 2)
    stop = free[0].text[5:8]
    assert len(stop) == 3
    stopped = engine.generate(PROMPTS[:2], [GenerationParams(max_new_tokens=20, stop=(stop,)),
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


def test_sampling_is_seeded_per_request_whatever_the_batch(engine):
    params = GenerationParams(max_new_tokens=12, temperature=1.0)
    alone = engine.generate([PROMPTS[3]], [params])[0]
    in_batch = engine.generate(PROMPTS[:6], [params] * 6)[3]
    assert alone == in_batch


def test_text_pieces_hold_back_a_possible_stop_string_and_unfinished_characters(tiny_model):
    from synth.lm.sampling import TextPieces

    tokenizer = tiny_model.tokenizer
    pieces = TextPieces(tokenizer, ["\nUser:"])
    handed = [pieces.add(token) for token in tokenizer("Hi\nUs", add_special_tokens=False)["input_ids"]]
    assert "".join(handed) == "Hi"  # "\nUs" may still become "\nUser:"
    assert pieces.finish("Hi\nUs") == "\nUs"  # the row ended without the stop: the rest comes out
    assert pieces.finish("Hi\nUs") == ""

    class BytePieces:  # a tokenizer whose second token completes a two-byte character
        def decode(self, tokens, skip_special_tokens=True):
            return "é" if len(tokens) > 1 else "\ufffd"

    accented = TextPieces(BytePieces(), [])
    assert accented.add(1) == "" and accented.add(2) == "é"
