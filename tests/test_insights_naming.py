"""synth.insights.naming: names from the central statement, or from an LLM that sees the nearest non-members."""

from __future__ import annotations

import json

from dspy.utils import DummyLM

from synth.insights import LLMNamer
from synth.insights.naming import CentralStatementNamer, GroupToName


def test_central_statement_names_are_distinct() -> None:
    groups = [
        GroupToName(("The user likes tea.", "She drinks green tea."), ("tea",), (), 5),
        GroupToName(("The user likes tea.", "He brews oolong tea daily."), ("oolong",), (), 5),
    ]
    names = CentralStatementNamer().name(groups)
    assert names[0].name == "Likes tea"
    assert names[1].name == "Brews oolong tea daily"


def test_llm_namer_sees_contrast_and_deduplicates() -> None:
    lm = DummyLM(
        [
            {"name": "Tea lovers", "description": "Users who enjoy tea."},
            {"name": "Tea lovers", "description": "Repeated name."},
        ]
    )
    groups = [
        GroupToName(("Drinks green tea.",), ("green",), ("Drinks coffee.",), 9),
        GroupToName(("Brews oolong tea.",), ("oolong",), ("Drinks green tea.",), 4),
    ]
    names = LLMNamer(lm).name(groups)
    assert names[0].name == "Tea lovers"
    assert names[1].name != "Tea lovers" and "oolong" in names[1].name.lower()
    prompt = json.dumps(lm.history[0]["messages"])
    assert "Drinks coffee." in prompt  # nearest non-members are shown for contrast


def test_groups_of_labelled_items_are_named_by_their_most_common_label() -> None:
    groups = [
        GroupToName(("Beekeeping: Keeps two hives.", "Honeybees: Jars honey.", "Beekeeping: Checks hives weekly."),
                    ("hives",), (), 6),
        GroupToName(("Beekeeping: Inspects the hives.", "Apiary: Mentors new keepers."), ("keepers",), (), 5),
        GroupToName(("She keeps bees.", "Bees: Likes bees."), ("bees",), (), 5),
    ]
    names = CentralStatementNamer().name(groups)
    assert [name.name for name in names][:2] == ["Beekeeping", "Apiary"]  # a label already taken is not reused
    assert names[2].name in ("Bees", "Keeps bees")
