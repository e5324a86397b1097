"""synth.generate: two contrasting drafts for a visitor's own prompt."""

from __future__ import annotations

import pytest

from synth.generate import DRAFT_STYLES, draft_two_responses
from tests.scripted import scripted_lm


def test_draft_two_responses_gives_two_different_replies_and_refuses_bad_prompts():
    lm, engine = scripted_lm()
    compact, thorough = draft_two_responses(lm, "How do I boil an egg?")
    assert DRAFT_STYLES[0][0] in compact and DRAFT_STYLES[1][0] in thorough and engine.calls["draft"] == 2
    with pytest.raises(ValueError, match="write a prompt"):
        draft_two_responses(lm, "   ")
    with pytest.raises(ValueError, match="under 2000"):
        draft_two_responses(lm, "x" * 2001)
