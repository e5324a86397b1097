"""The live fit view: what a visitor reads about each trace."""

from components.run_view import RunView
from synth import events as ev
from synth.events import Stage


def trace(**changes) -> ev.TraceBootstrapped:
    fields = {"stage": Stage.BOOTSTRAP, "pair_index": 0, "prompt": "<b>hi</b>", "reasoning": "because",
              "verdict": "First", "user_choice": "First", "kept": True, "p_first": 0.8,
              "verdict_source": "probabilities"}
    return ev.TraceBootstrapped(**{**fields, **changes})


def test_a_rejected_guess_says_why_it_was_not_kept_and_text_is_escaped():
    view = RunView()
    view.apply(ev.StageStarted(stage=Stage.BOOTSTRAP, total_steps=2))
    view.apply(trace())
    view.apply(trace(pair_index=1, kept=False, p_first=None, verdict_source="fallback"))
    kept, guessed = view.entries[1], view.entries[2]
    assert "✓ kept" in kept and "not verified" not in kept
    assert "✗ rejected" in guessed and "fallback verdict: not verified" in guessed
    assert "<b>hi</b>" not in kept and "&lt;b&gt;hi&lt;/b&gt;" in kept
