"""Optimise Θ, the persona-writing program, once over many users with DSPy MIPROv2 (paper, Sec. 3.2).

Each user becomes one training example: the input is the notes built from their verified step-1 reasoning, and
the metric is how well a judge carrying the written persona predicts that user's validation pairs (both
orderings). MIPROv2 optimises Θ's instruction and its few-shot demos (worked examples: notes, reasoning and a
persona whose judge did at least as well as chance). A separate ``prompt_lm`` proposes the instructions, which is how
a Θ is distilled from a larger model.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dspy

from synth.data import PreferencePair, group_by_user, split_train_validation
from synth.events import Stage
from synth.judge import PairwiseJudge
from synth.signatures import TolerantChatAdapter
from synth.steps import PairScore, StepRunner, StepSettings, judge_both_orders, traces_for_persona
from synth.theta import PersonaWriter, load_theta, save_theta

MIN_PAIRS_PER_USER = 4
DEMO_THRESHOLD = 0.5  # a written persona becomes a Θ demo only if its judge scores at least this on validation


@dataclass(frozen=True)
class ThetaResult:
    theta_id: str
    baseline: float  # mean validation accuracy of personas from the starting Θ, on held-out users
    optimized: float  # the same with the optimised Θ
    n_users: int


@dataclass(frozen=True)
class UserTask:
    user_id: str
    notes: str
    validation: tuple[PreferencePair, ...]


def prepare_users(pairs: Sequence[PreferencePair], settings: StepSettings, max_users: int, seed: int,
                  writer: PersonaWriter) -> list[UserTask]:
    """Step 1 for each user (no persona): the winning reasoning becomes that user's notes, sized for ``writer``."""
    users = [(uid, ps) for uid, ps in group_by_user(pairs).items() if len(ps) >= MIN_PAIRS_PER_USER]
    random.Random(seed).shuffle(users)
    tasks = []
    for user_id, user_pairs in users[:max_users]:
        train, validation = split_train_validation(user_pairs)
        runner = StepRunner(settings, lambda event: None, threading.Event())
        traces, _, best = runner.search(Stage.BOOTSTRAP, None, train, validation, random.Random(seed))
        notes = runner.preference_notes(writer, traces_for_persona(traces, best), train)
        tasks.append(UserTask(user_id, notes, tuple(validation)))
    return tasks


def persona_metric(settings: StepSettings):
    """Validation accuracy (both orderings) of a judge carrying the predicted persona."""

    def metric(example: dspy.Example, prediction: dspy.Prediction, trace=None) -> float:
        judge = PairwiseJudge(persona=(prediction.persona or "").strip() or None,
                              reasoning_tokens=settings.reasoning_tokens, verdict_policy=settings.verdict_policy)
        scores = [PairScore.of(*judge_both_orders(judge, pair, settings.max_turn_chars)).score
                  for pair in example.validation]
        return sum(scores) / len(scores)

    return metric


def optimize_theta(pairs: Sequence[PreferencePair], lm: dspy.BaseLM, output: str | Path,
                   prompt_lm: dspy.BaseLM | None = None, auto: str | None = "light", max_users: int = 40,
                   seed: int = 0, quick: bool = False, num_threads: int = 8, num_trials: int | None = None,
                   start_theta: str | Path | None = None, max_demos: int = 2) -> ThetaResult:
    """Run MIPROv2 over users' notes (instruction and up to ``max_demos`` demos); save the optimised Θ to ``output``
    and report before/after accuracy."""
    settings = StepSettings.resolve(quick, num_threads=num_threads, seed=seed)
    start, _ = load_theta(start_theta)
    with dspy.context(lm=lm, adapter=TolerantChatAdapter()):
        tasks = prepare_users(pairs, settings, max_users, seed, start)
        if len(tasks) < 2:
            raise ValueError(f"need at least 2 users with {MIN_PAIRS_PER_USER}+ pairs each, found {len(tasks)}")
        examples = [dspy.Example(preference_notes=t.notes, validation=t.validation, user_id=t.user_id)
                    .with_inputs("preference_notes") for t in tasks]
        half = max(1, len(examples) // 2)
        trainset, valset = examples[:half], examples[half:]
        metric = persona_metric(settings)
        optimizer = dspy.MIPROv2(metric=metric, prompt_model=prompt_lm or lm, task_model=lm, auto=auto,
                                 num_candidates=None if auto else 3, max_bootstrapped_demos=max_demos,
                                 max_labeled_demos=0, num_threads=num_threads, seed=seed,
                                 metric_threshold=DEMO_THRESHOLD)
        compile_options = {} if auto else {"num_trials": num_trials or 3}
        optimized: PersonaWriter = optimizer.compile(start, trainset=trainset, valset=valset, minibatch=False,
                                                     **compile_options)
        evaluate = dspy.Evaluate(devset=valset, metric=metric, num_threads=num_threads, display_progress=False)
        baseline = float(evaluate(start).score) / 100
        after = float(evaluate(optimized).score) / 100
    return ThetaResult(save_theta(optimized, output), baseline, after, len(tasks))
