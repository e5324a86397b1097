"""The Space's model path (Llama 3.2 3B Instruct) on a stand-in: a tiny random Llama whose tokenizer carries a
Llama-3-style chat template, built here (the real one cannot be downloaded). A quick fit, "Test your judge" and
"Draft two replies" run through the local engine; the checks are on what the engine renders and reads: every prompt
is the template's, the verdict is read right after the template's assistant header, and a reply ends at any of the
template's end-of-turn tokens (several eos ids, from the generation config)."""

from __future__ import annotations

import json
import threading

import pytest

from synth.data import load_pairs
from synth.generate import draft_two_responses
from synth.judge import VERDICT_MARKER
from synth.lm.engine import LocalEngine
from synth.lm.loading import LocalModel
from synth.lm.sampling import GenerationParams
from synth.paths import asset_path
from synth.pipeline import DefaultJudge, SynthesizeMe
from tests.tiny_lm import TEST_DEVICE

pytest_plugins = ["tests.lm_fixtures"]  # make_engine

BOS, START, END, EOT, EOM, EOS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                                  "<|eom_id|>", "<|end_of_text|>")
ASSISTANT_HEADER = f"{START}assistant{END}\n\n"

# Llama 3.x's template in small: the system turn with the dates (today's from the clock when the renderer offers
# one), the other turns trimmed, each closed by <|eot_id|>, and an open assistant header to generate after.
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- if strftime_now is defined %}"
    "{%- set date_string = strftime_now('%d %b %Y') %}{%- else %}{%- set date_string = '26 Jul 2024' %}"
    "{%- endif %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


def build_llama3_chat_model(directory) -> str:
    """A 2-layer Llama with a byte-level BPE tokenizer trained on the example pairs, Llama 3's special tokens, its
    BOS-adding post-processor, the template above, and a generation config with three end-of-turn ids."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = [BOS, EOS, START, END, EOM, EOT]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    texts = [json.dumps(json.loads(line)) for line in asset_path("example_pairs.jsonl").read_text().splitlines()]
    backend.train_from_iterator(texts * 3, trainers.BpeTrainer(
        vocab_size=1200, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, bos_id)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOT)
    tokenizer.chat_template = LLAMA3_TEMPLATE
    eos_ids = [backend.token_to_id(token) for token in (EOS, EOM, EOT)]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=backend.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192, bos_token_id=bos_id,
        eos_token_id=eos_ids, tie_word_embeddings=True))
    model.generation_config = GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_ids)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> LocalModel:
    directory = tmp_path_factory.mktemp("tiny-llama3-chat")
    return LocalModel(build_llama3_chat_model(directory), device=TEST_DEVICE, dtype="float32").load()


class Recorded:
    """Every prompt the engine renders, kept as it reaches generation or scoring."""

    def __init__(self, engine: LocalEngine, monkeypatch):
        self.generated: list[str] = []
        self.results: list = []  # the generations' results, in the order they were asked for
        self.scored: list[str] = []
        self._lock = threading.Lock()
        generate, score = engine.generate, engine.choice_probabilities

        def recorded_generate(prompts, params):
            with self._lock:
                self.generated.extend(prompts)
            results = generate(prompts, params)
            with self._lock:
                self.results.extend(results)
            return results

        def recorded_score(prompts, choices):
            with self._lock:
                self.scored.extend(prompts)
            return score(prompts, choices)

        monkeypatch.setattr(engine, "generate", recorded_generate)
        monkeypatch.setattr(engine, "choice_probabilities", recorded_score)


def end_turn_after(engine: LocalEngine, token: str, steps: int):
    """Make the random model end its turn with ``token`` once it has decoded ``steps`` steps after a prefill (a
    random model never ends a turn by itself); returns the hook's handle."""
    network, token_id = engine.local_model.model, engine.local_model.tokenizer.convert_tokens_to_ids(token)
    decoded = [0]

    def hook(module, args, kwargs, output):
        if "logits_to_keep" in kwargs:  # a prefill (the runner's decoding steps keep every logit)
            decoded[0] = 0
            return output
        decoded[0] += 1
        if decoded[0] >= steps:
            output.logits[:, -1, token_id] += 1e4
        return output

    return network.register_forward_hook(hook, with_kwargs=True)


@pytest.mark.timeout(600)
def test_a_quick_fit_and_the_judge_tester_render_the_template_and_read_the_verdict_after_its_header(
        chat_model, make_engine, monkeypatch):
    engine = make_engine(chat_model)
    tokenizer = chat_model.tokenizer
    assert engine.runner.eos_ids == {tokenizer.convert_tokens_to_ids(t) for t in (EOS, EOM, EOT)}
    recorded = Recorded(engine, monkeypatch)
    lm = engine.as_lm(cache=False)
    pairs = load_pairs(asset_path("example_pairs.jsonl"))[:5]
    model = SynthesizeMe(lm=lm, quick=True, reasoning_tokens=8, persona_tokens=16, num_threads=4).fit(pairs)
    pair = pairs[0]
    personal = model.predict_proba(pair.context, pair.chosen, pair.rejected)
    default = DefaultJudge(lm=lm, reasoning_tokens=8).predict_proba(pair.context, pair.chosen, pair.rejected)
    assert 0.0 <= personal <= 1.0 and 0.0 <= default <= 1.0
    assert all(t["verdict_source"] == "probabilities" for t in model.artifact_["traces"])
    assert recorded.generated and recorded.scored
    for prompt in recorded.generated + recorded.scored:  # the template's, opened once, with a pinned date
        assert prompt.startswith(f"{BOS}{START}system{END}\n\nCutting Knowledge Date: December 2023\n"
                                 "Today Date: 26 Jul 2024\n\n")
        assert prompt.count(BOS) == 1
        ids = engine.prompts.encode(prompt)
        assert ids.count(tokenizer.bos_token_id) == 1  # no second BOS from the tokenizer's post-processor
    for prompt in recorded.generated:  # generation starts right after the open assistant header (demos are turns)
        turn = prompt.rsplit(ASSISTANT_HEADER, 1)[1]  # Θ's persona continues its own reasoning in the same turn
        assert turn == "" or (turn.startswith("[[ ## reasoning ## ]]\n") and turn.endswith("[[ ## persona ## ]]\n"))
        assert prompt.count(EOT) == prompt.count(START) - 1  # turns closed
    verdict_slot = f"{VERDICT_MARKER}\n"
    for prompt in recorded.scored:  # the verdict is read right after the header and the judge's own reasoning
        turn = prompt.rsplit(ASSISTANT_HEADER, 1)[1]
        assert turn.startswith("[[ ## reasoning ## ]]\n") and turn.endswith(verdict_slot)
        assert EOT not in turn and START not in turn
    persona_prompts = [p for p in recorded.generated if "persona" in p.rsplit(ASSISTANT_HEADER)[0].lower()]
    assert persona_prompts  # the persona writer went through the template too


@pytest.mark.timeout(300)
def test_replies_end_at_any_of_the_templates_end_of_turn_ids(chat_model, make_engine, monkeypatch):
    """"Draft two replies" (one greedy, one sampled) and a plain generation stop at the end-of-turn token, whether
    it is the tokenizer's eos or another id only the generation config names."""
    engine = make_engine(chat_model)
    recorded = Recorded(engine, monkeypatch)
    lm = engine.as_lm(cache=False)
    question = "How should I store coffee beans?"
    for token in (EOM, EOT):
        handle = end_turn_after(engine, token, steps=5)
        try:
            engine.generate([engine.prompts.render([{"role": "user", "content": question}])],
                            [GenerationParams(max_new_tokens=64)])
            drafts = draft_two_responses(lm, question + f" ({token})")
        finally:
            handle.remove()
        assert all(draft and token not in draft for draft in drafts)
    assert len(recorded.results) == 6
    for prompt, result in zip(recorded.generated, recorded.results, strict=True):
        assert prompt.endswith(ASSISTANT_HEADER)
        assert result.finish_reason == "stop" and result.completion_tokens == 6  # 5 tokens, then the end of turn
