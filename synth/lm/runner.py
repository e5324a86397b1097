"""The model runner: the only code that runs the network.

It prefills token sequences (each row starting from the longest prefix already computed, see
:class:`synth.lm.kv.PrefixStore`), decodes a batch of rows one step at a time (:class:`DecodeBatch`) and scores
choices from next-token probabilities. What runs when (admission, batching, scorings between steps) is the
scheduler's decision (:mod:`synth.lm.scheduler`); limits come from the engine's :class:`EngineConfig`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from synth.lm.config import EngineConfig
from synth.lm.loading import LocalModel
from synth.lm.sampling import GenerationParams, StopOnText, cut_at_stop, pick_tokens, seeded_generator


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"


@dataclass
class Prefilled:
    """What a prefill leaves: the kept logits, the cache, the mask over its columns and each row's next position."""

    logits: object  # torch.Tensor [rows, keep, vocab]
    cache: object  # transformers Cache
    mask: object  # torch.Tensor [rows, columns]
    next_positions: object  # torch.Tensor [rows]


@dataclass(eq=False)
class DecodeRow:
    """One generation request while it decodes. ``max_new_tokens`` is what the request may still write: its
    ``params.max_new_tokens`` within the model's context (see :meth:`ModelRunner.new_tokens_allowed`)."""

    prompt: str
    ids: list[int]
    params: GenerationParams
    tag: object = None  # the caller's handle for this row
    max_new_tokens: int | None = None  # None: the params' limit
    new_tokens: list[int] = field(default_factory=list)
    finish_reason: str = "length"

    def __post_init__(self) -> None:
        if self.max_new_tokens is None:
            self.max_new_tokens = self.params.max_new_tokens

    @property
    def tokens_needed(self) -> int:
        return len(self.ids) + self.max_new_tokens

    def result(self, tokenizer) -> Generation:
        text, stopped = cut_at_stop(tokenizer.decode(self.new_tokens, skip_special_tokens=True), self.params.stop)
        return Generation(text=text, prompt_tokens=len(self.ids), completion_tokens=len(self.new_tokens),
                          finish_reason="stop" if stopped else self.finish_reason)


class ModelRunner:
    """Runs one loaded model for one engine: prefills, decoding steps and choice scoring, with the engine's store of
    computed prefixes. Called from one thread at a time (the scheduler's worker)."""

    def __init__(self, model: LocalModel, config: EngineConfig):
        from synth.lm import kv

        model.load()
        self.local_model = model
        self.config = config
        self.network = model.model
        self.tokenizer = model.tokenizer
        self.device = model.device
        self.layer_windows = kv.layer_windows(self.network.config)  # read once: every prefill needs them
        self.prefix_store = kv.PrefixStore(prefix_store_bytes(self.device, config))
        self.context_tokens = context_tokens(self.network.config, config)
        # Chat models end a turn with one of several tokens (Llama 3: <|eot_id|>, <|eom_id|>, <|end_of_text|>):
        # every id the generation config or the tokenizer names ends a row.
        self.eos_ids = set(_as_list(self.network.generation_config.eos_token_id)
                           + _as_list(self.tokenizer.eos_token_id))
        self.reused_tokens = 0  # prompt tokens taken from computed prefixes instead of run again
        self.computed_tokens = 0  # prompt tokens run through the model

    @property
    def prefill_rows(self) -> int:
        """Rows per prefill pass on this device."""
        return self.config.prefill_rows(self.device)

    def new_tokens_allowed(self, prompt_tokens: int, requested: int) -> int:
        """How many of ``requested`` new tokens fit after a prompt of ``prompt_tokens`` in the model's context: a
        request cannot make the engine decode, or reserve cache, past it."""
        return max(0, min(requested, self.context_tokens - prompt_tokens))

    def batch_capacity(self, row_tokens: int) -> int:
        """How many rows of ``row_tokens`` tokens (prompt + new) one forward may carry on this device.

        On CUDA the free memory is shared between the KV cache and one row of last-position logits, up to the
        configured rows; elsewhere the configured rows.
        """
        rows = self.config.batch_rows(self.device)
        if self.device != "cuda":
            return rows
        import torch

        free_bytes, _ = torch.cuda.mem_get_info()
        # Blocks PyTorch keeps cached after a large prefill count as used for the driver but are free for us;
        # leaving them out splits a fit's stage into several smaller waves.
        free_bytes += torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
        config = self.network.config
        per_row = kv_bytes_per_token(config, self.network.dtype) * max(1, row_tokens) + 4 * config.vocab_size
        return max(1, min(rows, int(free_bytes * self.config.gpu_memory_fraction) // per_row))

    def attention_kernels(self):
        """The attention kernels a forward may use: on CUDA every SDPA kernel but cuDNN's.

        cuDNN builds an execution plan for each new sequence length, and the engine's lengths change every step, so
        with it a decoding step is several times slower; flash and memory-efficient attention take any length as is.
        """
        if self.device != "cuda":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    # ---- prefill -------------------------------------------------------------------------------------------
    def prefill(self, sequences: Sequence[list[int]], keep: int = 1, remember: bool = False,
                spare: int = 0) -> Prefilled:
        """Run ``sequences`` as one left-padded batch and return the last ``keep`` positions' logits and the cache.

        Each row starts from the longest stored prefix; :meth:`prefill_passes` first stores what rows share.
        ``remember`` stores each row's states for later calls; ``spare`` reserves cache columns for that many
        decoding steps.
        """
        import torch

        from synth.lm import kv

        store = self.prefix_store
        known = [store.longest_prefix(ids, len(ids) - keep) for ids in sequences]
        input_ids, mask, positions = self._padded(sequences)
        fresh = max(keep, max(len(ids) - length for ids, (length, _) in zip(sequences, known, strict=True)))
        cached = input_ids.shape[1] - fresh
        reused = [max(0, len(ids) - fresh) for ids in sequences]
        self.reused_tokens += sum(reused)
        self.computed_tokens += sum(len(ids) for ids in sequences) - sum(reused)
        if cached:
            cache = kv.cache_from_prefixes([pieces for _, pieces in known], reused, cached, fresh + spare,
                                           self.layer_windows, self.context_tokens)
        else:
            cache = kv.empty_cache(self.layer_windows, spare, self.context_tokens)
        with torch.inference_mode(), self.attention_kernels():
            logits = self.network(input_ids=input_ids[:, cached:], attention_mask=mask,
                                  position_ids=positions[:, cached:], past_key_values=cache, use_cache=True,
                                  logits_to_keep=keep).logits
            if remember:
                width = input_ids.shape[1]
                for row, ids in enumerate(sequences):
                    store.put(ids, kv.row_states(cache, row, width - len(ids)))
        return Prefilled(logits=logits, cache=cache, mask=mask, next_positions=positions[:, -1] + 1)

    def prefill_passes(self, sequences: Sequence[list[int]], *, keep: int = 1, remember: bool = False,
                       spare: int = 0, rows_per_pass: int | None = None) -> Iterator[tuple[list[int], Prefilled]]:
        """Prefill ``sequences`` in passes of at most ``rows_per_pass`` rows (default :attr:`prefill_rows`),
        yielding each pass's indices into ``sequences`` and what it left.

        The prefixes where the sequences branch apart are computed first, once each; then rows with least left to
        compute share a pass, since a padded pass computes every row as far back as its row with most left.
        """
        self.remember_shared_prefixes(sequences, keep)
        order = self.by_fresh_tokens(sequences, keep)
        step = rows_per_pass or self.prefill_rows
        for start in range(0, len(order), step):
            group = order[start: start + step]
            yield group, self.prefill([sequences[index] for index in group], keep=keep, remember=remember,
                                      spare=spare)

    def remember_shared_prefixes(self, sequences: Sequence[list[int]], keep: int = 1) -> None:
        """Compute and store, once each, the prefixes where ``sequences`` branch apart (each leaving its sequences
        at least ``keep`` tokens), so rows prefilled later, in any grouping, start from them.

        A fit's stage sends judge prompts that share the instructions, then per candidate its demos, then differ
        in the pair judged: the instructions are computed once, then each candidate's demos once, shortest first.
        A branch is skipped when it adds fewer than ``min_shared_prefix`` tokens to what is already known.
        """
        minimum = self.config.min_shared_prefix
        ordered = sorted(tuple(ids) for ids in sequences)
        branches = set()
        for first, second in itertools.pairwise(ordered):
            length = min(len(_common_prefix([first, second])), min(len(first), len(second)) - keep)
            if length >= minimum:
                branches.add(first[:length])
        chosen: list[tuple[int, ...]] = []
        for branch in sorted(branches, key=len):
            below = [len(other) for other in chosen if branch[: len(other)] == other]
            known = max([self.prefix_store.longest_prefix(branch, len(branch))[0], *below])
            if len(branch) - known >= minimum:
                chosen.append(branch)
        while chosen:  # a branch waits until the shorter ones it extends are stored
            level = [branch for branch in chosen
                     if not any(len(other) < len(branch) and branch[: len(other)] == other for other in chosen)]
            for start in range(0, len(level), self.prefill_rows):
                self.prefill([list(branch) for branch in level[start: start + self.prefill_rows]], remember=True)
            chosen = [branch for branch in chosen if branch not in level]

    def by_fresh_tokens(self, sequences: Sequence[list[int]], keep: int = 1) -> list[int]:
        """Indices of ``sequences``, fewest tokens left to compute first."""
        fresh = [len(ids) - self.prefix_store.longest_prefix(ids, len(ids) - keep)[0] for ids in sequences]
        return sorted(range(len(sequences)), key=lambda index: (fresh[index], len(sequences[index])))

    def _padded(self, sequences: Sequence[list[int]]):
        """Left-padded ids, attention mask and position ids (positions count real tokens only)."""
        import torch

        width = max(len(ids) for ids in sequences)
        input_ids = torch.full((len(sequences), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            mask[row, width - len(ids):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return input_ids.to(self.device), mask.to(self.device), positions.to(self.device)

    # ---- scoring -------------------------------------------------------------------------------------------
    def choice_probabilities(self, prompts: Sequence[list[int]], choices: Sequence[str]) -> list[list[float]]:
        """P(choice | prompt) renormalised over the choices, for each encoded prompt, in padded batches.

        When the choices start with different tokens one forward pass per prompt suffices; otherwise each
        choice's full token sequence is appended to the prompt and scored (all rows end together under left
        padding, so only the last few positions' logits are kept).
        """
        import torch

        choice_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        if any(not ids for ids in choice_ids):
            raise ValueError(f"every choice needs at least one token: {list(choices)!r}")
        single_token = len({ids[0] for ids in choice_ids}) == len(choices)
        if single_token:
            rows = [(prompt, ()) for prompt in range(len(prompts))]
        else:
            rows = [(prompt, tuple(ids)) for prompt in range(len(prompts)) for ids in choice_ids]
        keep = 1 if single_token else max(len(ids) for ids in choice_ids) + 1
        sequences = [list(prompts[prompt]) + list(tail) for prompt, tail in rows]
        scores = [None] * len(rows)
        capacity = min(self.prefill_rows, self.batch_capacity(max(len(s) for s in sequences)))
        for chunk, filled in self.prefill_passes(sequences, keep=keep, rows_per_pass=capacity):
            logp = torch.log_softmax(filled.logits.float(), -1)
            for slot, index in enumerate(chunk):
                scores[index] = _tail_score(logp[slot], rows[index][1], keep, choice_ids, single_token)
        if single_token:
            return [torch.softmax(score, -1).tolist() for score in scores]
        per_prompt = torch.stack(scores).view(len(prompts), len(choices))  # type: ignore[arg-type]
        return torch.softmax(per_prompt, -1).tolist()


class DecodeBatch:
    """Rows decoding together. Rows join after their prefill (:meth:`admit`) and leave the moment they finish
    (:meth:`step`), so nobody waits for the longest row of a batch it happened to start with.

    Each row keeps its own max tokens, temperature (sampling seeded from its prompt, so a request samples the same
    text whatever batch it lands in) and stop strings. Greedy rows give the same text as one-at-a-time
    ``model.generate`` (exactly in float32; bf16 rounding may differ with the batch's shape).
    """

    def __init__(self, runner: ModelRunner):
        self.runner = runner
        self._stop_checkers: dict[tuple[str, ...], StopOnText] = {}
        self.clear()

    def __len__(self) -> int:
        return len(self.rows)

    def admit(self, rows: Sequence[DecodeRow]) -> list[DecodeRow]:
        """Prefill ``rows`` (what they share once, then passes of the device's prefill rows) and add them to the
        batch; returns the rows that are already done (no new tokens)."""
        done = [row for row in rows if row.max_new_tokens <= 0]
        rows = [row for row in rows if row.max_new_tokens > 0]
        if not rows:
            return done
        spare = max(row.max_new_tokens for row in rows + self.rows)
        for group, filled in self.runner.prefill_passes([row.ids for row in rows], remember=True, spare=spare):
            self._join([rows[index] for index in group], filled, spare)
        return done

    def _join(self, rows: Sequence[DecodeRow], filled: Prefilled, spare: int) -> None:
        import torch

        from synth.lm.kv import merge_caches

        logits = filled.logits[:, -1]
        if self.rows:
            width = max(self._mask.shape[1], filled.mask.shape[1])
            self._cache = merge_caches(self._cache, filled.cache, spare, self.runner.context_tokens)
            self._mask = torch.cat([_left_pad(self._mask, width), _left_pad(filled.mask, width)])
            self._next_positions = torch.cat([self._next_positions, filled.next_positions])
            self._logits = torch.cat([self._logits, logits])
        else:
            self._cache, self._mask, self._next_positions, self._logits = (filled.cache, filled.mask,
                                                                           filled.next_positions, logits)
        device = self.runner.device
        self.rows.extend(rows)
        self._generators.extend(seeded_generator(row.prompt, device) if row.params.temperature > 0 else None
                                for row in rows)
        self._stoppers.extend(self._stop_checker(row.params.stop) if row.params.stop else None for row in rows)

    def step(self) -> list[DecodeRow]:
        """Pick every row's next token; finished rows leave; the rest run one forward step. Returns the finished."""
        import torch

        chosen = pick_tokens(self._logits.float(), [row.params.temperature for row in self.rows], self._generators)
        finished, keep = [], []
        eos_ids = self.runner.eos_ids
        for slot, (row, token) in enumerate(zip(self.rows, chosen.tolist(), strict=True)):
            row.new_tokens.append(token)
            stopper = self._stoppers[slot]
            if token in eos_ids or (stopper is not None and stopper(row.new_tokens)):
                row.finish_reason = "stop"
                finished.append(row)
            elif len(row.new_tokens) >= row.max_new_tokens:
                finished.append(row)
            else:
                keep.append(slot)
        if len(keep) < len(self.rows):
            kept = set(keep)
            self._remember(finished, [slot for slot in range(len(self.rows)) if slot not in kept])
            self._keep_rows(keep)
            chosen = chosen[keep]
        if self.rows:
            runner = self.runner
            self._mask = torch.cat([self._mask, self._mask.new_ones((len(self.rows), 1))], dim=1)
            with torch.inference_mode(), runner.attention_kernels():
                self._logits = runner.network(
                    input_ids=chosen[:, None].to(runner.device), attention_mask=self._mask,
                    position_ids=self._next_positions[:, None], past_key_values=self._cache,
                    use_cache=True).logits[:, -1]
            self._next_positions = self._next_positions + 1
        return finished

    def _remember(self, finished: Sequence[DecodeRow], slots: Sequence[int]) -> None:
        """Store finished rows' prompt + generated states: a judge's verdict is scored next on its prompt and its
        reasoning, which then need no prefill (the newest token was never run, so it is left out)."""
        from synth.lm import kv

        width = self._mask.shape[1]
        for row, slot in zip(finished, slots, strict=True):
            ran = row.ids + row.new_tokens[:-1]
            self.runner.prefix_store.put(ran, kv.row_states(self._cache, slot, width - len(ran)))

    def _stop_checker(self, stops: tuple[str, ...]) -> StopOnText:
        """One checker per set of stop strings, kept across requests so its per-token answers are reused."""
        checker = self._stop_checkers.get(stops)
        if checker is None:
            checker = self._stop_checkers[stops] = StopOnText(self.runner.tokenizer, stops)
        return checker

    def drop(self, rows: Sequence[DecodeRow]) -> None:
        """Remove ``rows`` (cancelled requests) from the batch, keeping none of their states."""
        if rows:
            self._keep_rows([slot for slot, row in enumerate(self.rows) if row not in rows])

    def clear(self) -> None:
        """Drop every row and its states."""
        self.rows: list[DecodeRow] = []
        self._generators: list = []
        self._stoppers: list[StopOnText | None] = []
        self._cache = self._mask = self._next_positions = self._logits = None

    def _keep_rows(self, slots: list[int]) -> None:
        import torch

        if not slots:
            self.clear()
            return
        self.rows = [self.rows[s] for s in slots]
        self._generators = [self._generators[s] for s in slots]
        self._stoppers = [self._stoppers[s] for s in slots]
        index = torch.tensor(slots, device=self.runner.device)
        self._cache.batch_select_indices(index)
        self._mask, self._next_positions, self._logits = (self._mask[index], self._next_positions[index],
                                                          self._logits[index])
        padding = int(self._mask.any(0).int().argmax())  # columns that are padding in every remaining row
        if padding:
            self._mask = self._mask[:, padding:]
            for layer in self._cache.layers:
                layer.drop_leading(padding)


def prefix_store_bytes(device: str, config: EngineConfig) -> int:
    """Room for remembered prompt states: ``config.prefix_store_bytes`` of RAM, or on CUDA at least a share of the
    memory the weights left free.

    A fit's stage has many judge calls in flight whose prompts and reasonings are scored again after their
    reasoning; with a multi-billion-parameter model a gigabyte of states holds fewer tokens than one stage's pairs
    and reasonings.
    """
    if device != "cuda":
        return config.prefix_store_bytes
    import torch

    free_bytes, _ = torch.cuda.mem_get_info()
    return max(config.prefix_store_bytes, int(free_bytes * config.gpu_prefix_store_fraction))


def context_tokens(model_config, config: EngineConfig) -> int:
    """Tokens one request may hold (prompt + new): the model's own context, within ``config.max_context_tokens``."""
    text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    own = getattr(text_config, "max_position_embeddings", None)
    return min(own, config.max_context_tokens) if isinstance(own, int) and own > 0 else config.max_context_tokens


def kv_bytes_per_token(config, dtype) -> int:
    """Bytes of key + value cache one token costs across all layers."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    element = dtype.itemsize if hasattr(dtype, "itemsize") else 4
    return 2 * config.num_hidden_layers * kv_heads * head_dim * element


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _left_pad(mask, width: int):
    import torch

    return torch.cat([mask.new_zeros((mask.shape[0], width - mask.shape[1])), mask], dim=1)


def _common_prefix(sequences: Sequence[list[int]]) -> list[int]:
    """The token ids every sequence starts with (``commonprefix`` compares lists element by element)."""
    return os.path.commonprefix([list(ids) for ids in sequences])  # noqa: RUF071


def _tail_score(logp, tail: tuple[int, ...], keep: int, choice_ids: Sequence[list[int]], single_token: bool):
    """Log-probability of the choice: its first token (single-token case) or its whole tail."""
    import torch

    if single_token:
        return logp[-1, [ids[0] for ids in choice_ids]]
    steps = logp[keep - 1 - len(tail): keep - 1]
    return steps[torch.arange(len(tail)), torch.tensor(tail, device=steps.device)].sum()
