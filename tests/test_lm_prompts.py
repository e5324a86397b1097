"""Prompt rendering: a base model gets a plain transcript whose assistant turn opens with the requested field, a chat
model its template (a system role folded in when the template refuses one), and long prompts keep their end."""

from __future__ import annotations

import types

from synth.lm.prompts import PromptFormat, request_messages

pytest_plugins = ["tests.lm_fixtures"]  # the tiny models and engines

MESSAGES = [{"role": "system", "content": "You judge."},
            {"role": "user", "content": "Which reply? Respond starting with the field `[[ ## reasoning ## ]]`."}]


def test_a_base_model_gets_a_plain_transcript_opening_the_requested_field(tiny_model):
    prompts = PromptFormat(tiny_model.tokenizer, max_input_tokens=8192)
    assert not prompts.has_chat_template
    assert prompts.render(MESSAGES) == ("You judge.\n\nUser: Which reply? Respond starting with the field "
                                        "`[[ ## reasoning ## ]]`.\n\nAssistant: [[ ## reasoning ## ]]\n")
    assert prompts.render(MESSAGES[1:], assistant_prefix="Verdict: ").endswith("\n\nAssistant: Verdict: ")


class TemplateTokenizer:
    """A chat tokenizer whose template refuses the system role, as some do."""

    chat_template = "<template>"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        if any(m["role"] == "system" for m in messages):
            raise ValueError("System role not supported")
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def test_a_chat_model_gets_its_template_with_a_refused_system_role_folded_in():
    prompts = PromptFormat(TemplateTokenizer(), max_input_tokens=8192)
    assert prompts.render(MESSAGES, assistant_prefix="Verdict: ") == (
        "<user>You judge.\n\nWhich reply? Respond starting with the field `[[ ## reasoning ## ]]`.<assistant>Verdict: ")


def test_a_long_prompt_keeps_its_first_token_and_its_end(tiny_model):
    prompts = PromptFormat(tiny_model.tokenizer, max_input_tokens=5)
    assert prompts.encode("abcdefgh") == prompts.encode("a") + prompts.encode("efgh")
    assert PromptFormat(tiny_model.tokenizer, max_input_tokens=1).encode("abcdefgh") == prompts.encode("a")


def test_request_messages_reads_a_dspy_request():
    part = types.SimpleNamespace
    request = part(system=[part(text="You "), part(text="judge.")],
                   messages=[part(role="developer", text="Rules."), part(role="user", text=None)])
    assert request_messages(request) == [{"role": "system", "content": "You judge."},
                                         {"role": "user", "content": "Rules."}, {"role": "user", "content": ""}]
