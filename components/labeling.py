"""Per-visitor labeling state: which pair is on screen, which side shows which reply, and the labels so far.

A ``LabelSession`` lives in a ``gr.State``, so every browser session has its own; nothing here is shared.
"""

from __future__ import annotations

import random
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.data import PreferencePair, Turn, json_lines
from synth.paths import asset_path

MIN_LABELS = 5
USEFUL_LABELS = 15
BANK_PATH = asset_path("pair_bank.jsonl")


@dataclass(frozen=True)
class BankPair:
    """A prompt with two replies; ``responses[0]`` is always the first pole of ``dimension``."""

    id: str
    topic: str
    dimension: str
    prompt: str
    responses: tuple[str, str]


def load_bank(path: Path = BANK_PATH) -> list[BankPair]:
    """Read the pair bank (JSONL); a broken row names its file, line and field, so an edited bank fails clearly."""
    bank = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, row in json_lines(lines, lambda number, reason: ValueError(f"{path}:{number}: {reason}")):
        where = f"{path}:{number}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object")
        missing = [name for name in ("id", "topic", "dimension", "prompt", "responses") if name not in row]
        if missing:
            raise ValueError(f"{where}: missing field {missing[0]!r}")
        try:
            responses = (row["responses"][0]["content"], row["responses"][1]["content"])
        except (IndexError, KeyError, TypeError) as error:
            raise ValueError(f"{where}: field 'responses' must hold two objects with 'content'") from error
        bank.append(BankPair(row["id"], row["topic"], row["dimension"], row["prompt"], responses))
    return bank


@dataclass(frozen=True)
class Shown:
    """A pair as displayed: ``swapped`` means the bank's second reply is on the left."""

    pair: BankPair
    swapped: bool

    @property
    def left(self) -> str:
        return self.pair.responses[1 if self.swapped else 0]

    @property
    def right(self) -> str:
        return self.pair.responses[0 if self.swapped else 1]


@dataclass
class Label:
    pair: PreferencePair
    shown_left: str  # "chosen" | "rejected": where the preferred reply was on screen
    source: str  # "bank" | "own prompt" | "import"


@dataclass
class LabelSession:
    """One visitor's queue of pairs to label, their labels, and their judge.

    Everything model-side crosses to the device as plain data; what stays here (the cancel flag, the fitted model)
    never leaves the app's process. ``lock`` serialises this visitor's events, which may arrive together.
    """

    seed: int
    id: str = field(default_factory=lambda: secrets.token_hex(8))  # names this visitor to the gate and the device
    client: str = ""  # the visitor's address, for the per-client cap
    queue: list[Shown] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    history: list[tuple[Shown, Label | None]] = field(default_factory=list)  # a pair labelled (or skipped: None)
    fitted: Any = None  # SynthesizeMe after a fit or an artifact reload
    fitted_here: bool = False  # fitted in this session (only such a persona may join the population)
    statements: list[str] = field(default_factory=list)  # the persona's trait statements, to rate
    ratings: dict[str, str] = field(default_factory=dict)  # statement -> "me" | "not me" | "unsure"
    contribution: Any = None  # components.contribute.Contribution once the persona joined the population
    answers: Any = None  # synth.generate.TwoAnswers: the last "what your persona changes" answers, complete
    answer_choice: bool | None = None  # True: the visitor preferred the answer shown first
    model_events: int = 0  # model-bound events started, against Limits.max_model_events
    cancel: threading.Event = field(default_factory=threading.Event)
    lock: threading.RLock = field(default_factory=threading.RLock)

    @classmethod
    def new(cls, bank: list[BankPair], seed: int | None = None, client: str = "") -> LabelSession:
        seed = random.SystemRandom().randrange(2**31) if seed is None else seed
        rng = random.Random(seed)
        order = rng.sample(bank, len(bank))
        return cls(seed=seed, client=client, queue=[Shown(p, rng.random() < 0.5) for p in order])

    @property
    def persona(self) -> str | None:
        """The persona of this visitor's fit or reloaded artifact, for the population tab."""
        return self.fitted.get_persona() if self.fitted is not None else None

    @property
    def current(self) -> Shown | None:
        return self.queue[0] if self.queue else None

    def choose(self, side: str, pair_id: str | None = None) -> bool:
        """Record that the visitor preferred the reply on ``side`` ("left" | "right") of the pair ``pair_id`` as it
        was shown (default: the pair on screen). False when that pair is no longer waiting (already answered)."""
        shown = self._take(pair_id)
        if shown is None:
            return False
        preferred, other = (shown.left, shown.right) if side == "left" else (shown.right, shown.left)
        pair = PreferencePair(context=(Turn("user", shown.pair.prompt),), chosen=Turn("assistant", preferred),
                              rejected=Turn("assistant", other), user_id="studio-visitor",
                              conversation_id=shown.pair.id,
                              extra={"shown_left": "chosen" if side == "left" else "rejected",
                                     "dimension": shown.pair.dimension})
        source = "own prompt" if shown.pair.id.startswith("own-") else "bank"
        self.labels.append(Label(pair, pair.extra["shown_left"], source))
        self.history.append((shown, self.labels[-1]))
        return True

    def skip(self, pair_id: str | None = None) -> bool:
        shown = self._take(pair_id)
        if shown is None:
            return False
        self.queue.append(shown)  # skipped pairs come back at the end
        self.history.append((shown, None))
        return True

    def undo(self) -> bool:
        """Put the last labeled or skipped pair back on screen; False when there is nothing to undo."""
        if not self.history:
            return False
        shown, label = self.history.pop()
        if label is not None:
            self.labels = [kept for kept in self.labels if kept is not label]
        else:
            self.queue.pop()
        self.queue.insert(0, shown)
        return True

    def add_own(self, prompt: str, first: str, second: str) -> None:
        """Show the visitor's own prompt with the model's two drafts next, in random order."""
        own_pairs = sum(shown.pair.id.startswith("own-") for shown in self.queue) + sum(
            label.source == "own prompt" for label in self.labels)
        rng = random.Random(self.seed + len(self.history) + len(self.labels))
        own = BankPair(f"own-{own_pairs + 1}-{secrets.token_hex(2)}", "your prompt", "your own", prompt,
                       (first, second))
        self.queue.insert(0, Shown(own, rng.random() < 0.5))

    def add_imported(self, pairs: list[PreferencePair]) -> None:
        self.labels.extend(Label(p, "imported", "import") for p in pairs)

    def add_choice(self, pair: PreferencePair, source: str) -> None:
        """A preference the visitor stated elsewhere (e.g. between their persona's answer and the plain one)."""
        self.labels.append(Label(pair, str(pair.extra.get("shown_first", "")), source))

    def pairs(self) -> list[PreferencePair]:
        return [label.pair for label in self.labels]

    def _take(self, pair_id: str | None) -> Shown | None:
        """Remove and return the waiting pair ``pair_id`` (default: the one on screen); None if it is not waiting."""
        index = 0 if pair_id is None else next(
            (i for i, shown in enumerate(self.queue) if shown.pair.id == pair_id), None)
        if index is None or index >= len(self.queue):
            return None
        return self.queue.pop(index)


def progress_text(n_labeled: int) -> str:
    if n_labeled < MIN_LABELS:
        state = f"{MIN_LABELS - n_labeled} more to start"
    elif n_labeled < USEFUL_LABELS:
        state = "ready to run"
    else:
        state = "plenty: more labels add little"
    return (f"{n_labeled} labeled, at least {MIN_LABELS} needed, up to {USEFUL_LABELS} useful · {state}")
