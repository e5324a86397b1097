"""Prompt rendering: a base model gets a plain transcript whose assistant turn opens with the requested field, a chat
model its template (a system role folded in when the template refuses one), and long prompts lose the middle of their
last turn, never the system prompt or the request for the answer."""

from __future__ import annotations

import types

import pytest

from synth.lm.budget import PromptTooLong
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


DSPY_REQUEST = ("\n\nRespond with the corresponding output fields, starting with the field `[[ ## reasoning ## ]]`, "
                "then `[[ ## preferred ## ]]` (must be formatted as a valid Python Literal['First', 'Second']), and "
                "then ending with the marker for `[[ ## completed ## ]]`.")


def test_a_plain_transcript_asks_for_the_answer_fields_in_few_tokens(tiny_model):
    judged = [{"role": "system", "content": "You judge."},
              {"role": "user", "content": "[[ ## first_reply ## ]]\nA" + DSPY_REQUEST}]
    text = PromptFormat(tiny_model.tokenizer, max_input_tokens=8192).render(judged)
    assert text == ("You judge.\n\nUser: [[ ## first_reply ## ]]\nA\n\nRespond with `[[ ## reasoning ## ]]`, then "
                    "`[[ ## preferred ## ]]`, then `[[ ## completed ## ]]`.\n\nAssistant: [[ ## reasoning ## ]]\n")
    demo = {"role": "user", "content": "an earlier turn" + DSPY_REQUEST}  # only the request being answered is cut
    assert DSPY_REQUEST in PromptFormat(tiny_model.tokenizer, 8192).render([demo, judged[1]])
    chat = PromptFormat(TemplateTokenizer(), max_input_tokens=8192).render(judged)
    assert chat.endswith(DSPY_REQUEST + "<assistant>")  # a chat model reads DSPy's own words


class TemplateTokenizer:
    """A chat tokenizer whose template refuses the system role, as some do."""

    chat_template = "<template>"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt, **template_variables):
        if any(m["role"] == "system" for m in messages):
            raise ValueError("System role not supported")
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def test_a_chat_model_gets_its_template_with_a_refused_system_role_folded_in():
    prompts = PromptFormat(TemplateTokenizer(), max_input_tokens=8192)
    assert prompts.render(MESSAGES, assistant_prefix="Verdict: ") == (
        "<user>You judge.\n\nWhich reply? Respond starting with the field `[[ ## reasoning ## ]]`.<assistant>Verdict: ")


def test_a_long_prompt_loses_the_middle_of_its_last_turn_never_the_system_prompt_or_the_request(tiny_model):
    system = {"role": "system", "content": "PERSONA: the user likes short replies."}
    judged = {"role": "user", "content": "[[ ## conversation ## ]]\n" + "start " + "x" * 400 + " end"
                                         + "\n\nRespond with the field `[[ ## reasoning ## ]]`."}
    prompts = PromptFormat(tiny_model.tokenizer, max_input_tokens=200)
    text = prompts.render([system, judged])
    assert len(prompts.encode(text)) <= 200
    assert "PERSONA: the user likes short replies." in text and "tokens cut" in text
    assert "start" in text and "end\n\nRespond with `[[ ## reasoning ## ]]`." in text
    with pytest.raises(PromptTooLong):  # nothing is ever cut from its start: a prompt too long is refused
        prompts.encode("abcdefgh" * 40)
    tiny = PromptFormat(tiny_model.tokenizer, max_input_tokens=20)
    with pytest.raises(PromptTooLong):  # the system prompt alone does not fit
        tiny.render([system, judged])


def test_request_messages_reads_a_dspy_request():
    part = types.SimpleNamespace
    request = part(system=[part(text="You "), part(text="judge.")],
                   messages=[part(role="developer", text="Rules."), part(role="user", text=None)])
    assert request_messages(request) == [{"role": "system", "content": "You judge."},
                                         {"role": "user", "content": "Rules."}, {"role": "user", "content": ""}]
