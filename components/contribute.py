"""A visitor's persona joining the population: private by default, evidence only with a second consent.

The record holds the persona, its trait statements, the model id and the time. With the second consent it also holds
the evidence: the verified reasoning about pairs whose texts are the bundled bank's (public), those pairs, and the
visitor's "is this you?" answers. Imported pairs, own prompts, extra fields of a file and any reasoning about them
never leave the visitor's session. The visitor gets an anonymous id and a deletion code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.labeling import BankPair
from synth.events import Stage
from synth.store import Evidence, PersonaRecord, PersonaStore, new_deletion_code, new_user_id


@dataclass(frozen=True)
class Contribution:
    """A visitor's record: its anonymous id and deletion code, and the fit and statements it was made from (kept in
    the visitor's session, so a later change of consent or ratings rewrites that same record)."""

    user_id: str
    deletion_code: str
    artifact: dict[str, Any]
    statements: tuple[str, ...]
    removed: bool = False  # the visitor removed it: nothing is written for it again


def public_evidence(artifact: dict[str, Any], bank: list[BankPair]) -> Evidence:
    """The kept reasoning of the fit's first step about the bank's pairs, each with its pair (``reasoning[i]`` is
    about ``pairs[i]``); a pair counts as public only when its prompt and both replies are a bank pair's texts."""
    public = {(pair.prompt, frozenset(pair.responses)): pair for pair in bank}
    train = artifact.get("pairs", {}).get("train", [])
    reasoning, pairs = [], []
    for trace in artifact.get("traces", []):
        if trace.get("stage") != Stage.BOOTSTRAP.value or not trace.get("kept"):
            continue
        index = trace.get("pair_index")
        row = train[index] if isinstance(index, int) and 0 <= index < len(train) else None
        if row is None or len(row.get("context", [])) != 1:
            continue
        prompt, chosen, rejected = row["context"][0]["content"], row["chosen"]["content"], row["rejected"]["content"]
        bank_pair = public.get((prompt, frozenset((chosen, rejected))))
        if bank_pair is None or chosen == rejected:
            continue
        reasoning.append(trace.get("reasoning") or "")
        pairs.append({"bank_id": bank_pair.id, "prompt": prompt, "chosen": chosen, "rejected": rejected})
    return Evidence(tuple(reasoning), tuple(pairs))


def _own_ratings(contribution: Contribution, ratings: dict[str, str]) -> dict[str, str]:
    """Answers count only for the statements the record holds."""
    return {statement: rating for statement, rating in ratings.items() if statement in contribution.statements}


class Contributor:
    """Writes, updates and removes visitors' records in the population store."""

    def __init__(self, store: PersonaStore, bank: list[BankPair]):
        self.store = store
        self.bank = bank

    def add(self, artifact: dict[str, Any], statements: list[str], ratings: dict[str, str],
            share_evidence: bool) -> Contribution:
        """Add a persona under a fresh anonymous id and deletion code."""
        contribution = Contribution(new_user_id(), new_deletion_code(), artifact, tuple(statements))
        self.update(contribution, ratings, share_evidence)
        return contribution

    def update(self, contribution: Contribution, ratings: dict[str, str], share_evidence: bool) -> None:
        """Write the record with or without the evidence (e.g. when the consent changes)."""
        if contribution.removed:
            return
        artifact = contribution.artifact
        record = PersonaRecord(
            user_id=contribution.user_id, persona=artifact.get("persona") or "", source="demo", consent=True,
            statements=contribution.statements, model=str(artifact.get("model", "")),
            evidence=public_evidence(artifact, self.bank) if share_evidence else None,
            ratings=_own_ratings(contribution, ratings) if share_evidence else {})
        self.store.add(record, deletion_code=contribution.deletion_code)

    def save_ratings(self, contribution: Contribution, ratings: dict[str, str]) -> None:
        """Replace only the record's answers (the persona is unchanged, so the population is not re-fitted)."""
        if not contribution.removed:
            self.store.set_ratings(contribution.user_id, _own_ratings(contribution, ratings))

    def remove(self, deletion_code: str) -> bool:
        return self.store.delete_with_code(deletion_code)
