"""A transformers causal LM in this process, exposed to DSPy 3.4 as an engine (``dspy.LM(..., engine=...)``).

``LocalModel`` owns weights, tokenizer and prompt rendering; ``LocalEngine`` turns DSPy requests into calls on it
and adds ``score_choices``, which reads a verdict from next-token probabilities so a judge never fails to answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events

log = logging.getLogger(__name__)

PLAIN_ROLE_NAMES = {"system": "", "user": "User", "assistant": "Assistant", "developer": "Instructions"}
# DSPy's chat adapter ends its request with "starting with the field `[[ ## name ## ]]`"; a base model follows the
# format far better when its turn already opens with that header.
FIRST_FIELD_REQUEST = re.compile(r"starting with the field `(\[\[ ## \w+ ## \]\])`")


def default_cache_dir() -> Path:
    return Path(os.environ.get("SYNTH_CACHE_DIR", Path.home() / ".cache" / "synth"))


def pick_device(requested: str = "auto") -> str:
    """CUDA > MPS > CPU unless the caller names one."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, requested: str = "auto"):
    """bf16 where the hardware multiplies it natively (CUDA; CPUs with AVX512-BF16 or AMX), else fp32.

    On this project's Xeon (AMX) bf16 doubles prefill throughput (900 vs 433 tokens/s at batch 16) and halves
    the batched decode step; on CPUs without native bf16 it would be emulated and slower than fp32.
    """
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device == "cuda":
        return torch.bfloat16
    if device == "cpu" and (_cpu_supports("_is_avx512_bf16_supported") or _cpu_supports("_is_amx_tile_supported")):
        return torch.bfloat16
    return torch.float32


def _cpu_supports(probe: str) -> bool:
    import torch

    check = getattr(torch.cpu, probe, None)
    return bool(check and check())


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"


class LocalModel:
    """Weights + tokenizer + prompt format for one local model, loaded once and shared by every fit.

    ``source`` is a Hugging Face id, a local directory or a ``.gguf`` file. GGUF weights are de-quantized by
    transformers on first load (about a minute on 2 CPU cores); the result is cached as safetensors so the next
    start takes seconds.
    """

    def __init__(self, source: str, *, device: str = "auto", dtype: str = "auto", max_input_tokens: int = 8192,
                 cache_dir: str | os.PathLike | None = None):
        self.source = str(source)
        self.device_request = device
        self.dtype_request = dtype
        self.max_input_tokens = max_input_tokens
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._lock = threading.Lock()
        self._model = None
        self._tokenizer = None
        self.device = "unloaded"
        self.load_seconds: float | None = None
        self._prefix_store = None  # made at load, with the layer windows: both are on every prefill's path
        self._layer_windows: list[int | None] = []
        self.reused_tokens = 0  # prompt tokens taken from computed prefixes instead of run again
        self.computed_tokens = 0  # prompt tokens run through the model

    # ---- loading -------------------------------------------------------------------------------------------
    @property
    def is_gguf(self) -> bool:
        return self.source.endswith(".gguf")

    @property
    def display_name(self) -> str:
        return Path(self.source).name if self.is_gguf else self.source

    def _gguf_cache_path(self) -> Path:
        stat = Path(self.source).stat()
        key = hashlib.sha256(f"{Path(self.source).resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
        return self.cache_dir / "models" / f"{Path(self.source).stem}-{key[:12]}"

    def load(self) -> LocalModel:
        """Load once (thread-safe); later calls return at once."""
        with self._lock:
            if self._model is None:
                started = time.perf_counter()
                self._load()
                self.load_seconds = time.perf_counter() - started
                log.info("loaded %s on %s in %.1fs", self.display_name, self.device, self.load_seconds)
        return self

    def load_in_background(self) -> Future:
        """Start :meth:`load` on a daemon thread so a UI can show its page at once; the future gives this model
        (or the load error). Calls that need the weights meanwhile simply wait for the same load."""
        future: Future = Future()

        def run() -> None:
            try:
                future.set_result(self.load())
            except BaseException as error:  # handed to whoever awaits the future
                future.set_exception(error)

        threading.Thread(target=run, name=f"load-{self.display_name}", daemon=True).start()
        return future

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from synth.lm import kv

        self.device = pick_device(self.device_request)
        dtype = pick_dtype(self.device, self.dtype_request)
        directory = self.source
        if self.is_gguf:
            directory = self._gguf_cache_path()
            if not (directory / "config.json").exists():
                self._convert_gguf(directory)
        # The tokenizer (Gemma's 262k-token tokenizer.json: ~9 s) loads on a thread while the weights load.
        tokenizer_future: Future = Future()

        def load_tokenizer() -> None:
            try:
                tokenizer_future.set_result(AutoTokenizer.from_pretrained(directory))
            except BaseException as error:
                tokenizer_future.set_exception(error)

        threading.Thread(target=load_tokenizer, name="load-tokenizer", daemon=True).start()
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
        tokenizer = tokenizer_future.result()
        model.to(self.device).eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._layer_windows = kv.layer_windows(model.config)
        self._prefix_store = kv.PrefixStore(prefix_store_bytes(self.device))
        self._tokenizer, self._model = tokenizer, model

    def _convert_gguf(self, target: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(self.source)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        # The weights are already de-quantized; drop the GGUF marker so they can be saved as plain safetensors.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        staging = target.with_name(target.name + f".partial-{os.getpid()}")
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staging, target)
        except OSError:  # another process finished first; theirs is as good as ours
            import shutil

            shutil.rmtree(staging, ignore_errors=True)

    @property
    def model(self):
        return self.load()._model

    @property
    def tokenizer(self):
        return self.load()._tokenizer

    # ---- prompts -------------------------------------------------------------------------------------------
    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, messages: Sequence[dict[str, str]], assistant_prefix: str = "") -> str:
        """Chat template when the tokenizer has one; otherwise a plain transcript a base model can continue.

        In the plain transcript, a request that names the first answer field gets that field's header as the
        start of the assistant turn (unless the caller gives its own prefix); parsing treats header-less text as
        that first field.
        """
        if self.has_chat_template:
            try:
                text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            except Exception:  # some templates refuse a system role: fold it into the first user turn
                text = self.tokenizer.apply_chat_template(_fold_system(messages), tokenize=False,
                                                          add_generation_prompt=True)
            return text + assistant_prefix
        blocks = []
        for message in messages:
            name = PLAIN_ROLE_NAMES.get(message["role"], message["role"].title())
            blocks.append(f"{name}: {message['content']}" if name else message["content"])
        if not assistant_prefix and messages:
            requested = FIRST_FIELD_REQUEST.search(messages[-1]["content"])
            assistant_prefix = f"{requested.group(1)}\n" if requested else ""
        blocks.append(f"Assistant: {assistant_prefix}" if assistant_prefix else "Assistant:")
        return "\n\n".join(blocks)

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=not self.has_chat_template)["input_ids"]
        if len(ids) > self.max_input_tokens:  # keep the end: it holds the pair being judged and the answer slot
            ids = ids[:1] + ids[-(self.max_input_tokens - 1):]
        return ids

    # ---- inference -----------------------------------------------------------------------------------------
    def batch_capacity(self, row_tokens: int) -> int:
        """How many rows of ``row_tokens`` tokens (prompt + new) one forward may carry on this device.

        On CUDA the free memory is shared between the KV cache and one row of last-position logits; on CPU and
        MPS a fixed cap (chosen by benchmarks/throughput.py) because larger batches stop paying off there.
        """
        model = self.model
        if self.device != "cuda":
            return CPU_BATCH_CAP
        import torch

        free_bytes, _ = torch.cuda.mem_get_info()
        # Blocks PyTorch keeps cached after a large prefill count as used for the driver but are free for us;
        # leaving them out shrank a fit's 72-row stage into several smaller waves.
        free_bytes += torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
        per_row = kv_bytes_per_token(model.config, model.dtype) * max(1, row_tokens) + 4 * model.config.vocab_size
        return max(1, min(GPU_BATCH_CAP, int(free_bytes * GPU_MEMORY_FRACTION) // per_row))

    def generate(self, prompts: Sequence[str], params: Sequence[GenerationParams],
                 cancel: threading.Event | None = None) -> list[Generation]:
        """Generate for every prompt with continuous batching: rows decode together, a finished row leaves at once
        and a waiting one is prefilled and joins, so the batch stays as full as :meth:`batch_capacity` allows.

        Each row keeps its own max tokens, temperature (sampling seeded from its prompt, so a request samples the
        same text whatever batch it lands in) and stop strings. Greedy rows give the same text as one-at-a-time
        ``model.generate`` (exactly in float32; bf16 rounding may differ with the batch's shape).
        """
        if len(prompts) != len(params):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} generation params")
        rows = [DecodeRow(prompt, self.encode(prompt), q, tag=index)
                for index, (prompt, q) in enumerate(zip(prompts, params, strict=True))]
        results: list[Generation | None] = [None] * len(rows)
        waiting = sorted(rows, key=lambda row: len(row.ids))  # similar lengths join together: little padding
        batch = DecodeBatch(self, cancel)
        while waiting or batch:
            room = batch.room(waiting)
            if room:
                joining, waiting = waiting[:room], waiting[room:]
                finished = batch.admit(joining)
            else:
                finished = batch.step()
            for row in finished:
                results[row.tag] = row.result(self.tokenizer)
        return results  # type: ignore[return-value]

    @property
    def prefix_store(self):
        """Computed prompt prefixes, shared by every batch (see ``synth.lm.kv``)."""
        return self.load()._prefix_store

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

    def prefill(self, sequences: Sequence[list[int]], keep: int = 1, remember: bool = False,
                spare: int = 0) -> Prefilled:
        """Run ``sequences`` as one left-padded batch and return the last ``keep`` positions' logits and the cache.

        Each row starts from the longest stored prefix (see :class:`synth.lm.kv.PrefixStore`); callers first
        store what their rows share with :meth:`remember_shared_prefixes`. ``remember`` stores each row's states
        for later calls; ``spare`` reserves cache columns for that many decoding steps.
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
                                           self._layer_windows)
        else:
            cache = kv.empty_cache(self._layer_windows, spare)
        with torch.inference_mode(), self.attention_kernels():
            logits = self.model(input_ids=input_ids[:, cached:], attention_mask=mask,
                                position_ids=positions[:, cached:], past_key_values=cache, use_cache=True,
                                logits_to_keep=keep).logits
            if remember:
                width = input_ids.shape[1]
                for row, ids in enumerate(sequences):
                    store.put(ids, kv.row_states(cache, row, width - len(ids)))
        return Prefilled(logits=logits, cache=cache, mask=mask, next_positions=positions[:, -1] + 1)

    def attention_kernels(self):
        """The attention kernels a forward may use: on CUDA every SDPA kernel but cuDNN's.

        cuDNN builds an execution plan for each new sequence length, and the engine's lengths change every step. On
        an H100 (3B model, 2,000-token prompts; ``benchmarks/decode_step.py``) a decoding step took 68-77 ms with
        it and 31-38 ms without, at 1 to 64 rows; flash and memory-efficient attention take any length as is.
        """
        if self.device != "cuda":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    def remember_shared_prefixes(self, sequences: Sequence[list[int]], keep: int = 1) -> None:
        """Compute and store, once each, the prefixes where ``sequences`` branch apart (each leaving its sequences
        at least ``keep`` tokens), so rows prefilled later, in any grouping, start from them.

        A fit's stage sends judge prompts that share the instructions, then per candidate its demos, then differ
        in the pair judged: the instructions are computed once, then each candidate's demos once, shortest first.
        A branch is skipped when it adds fewer than ``MIN_SHARED_PREFIX`` tokens to what is already known.
        """
        ordered = sorted(tuple(ids) for ids in sequences)
        branches = set()
        for first, second in itertools.pairwise(ordered):
            length = min(len(_common_prefix([first, second])), min(len(first), len(second)) - keep)
            if length >= MIN_SHARED_PREFIX:
                branches.add(first[:length])
        chosen: list[tuple[int, ...]] = []
        for branch in sorted(branches, key=len):
            below = [len(other) for other in chosen if branch[: len(other)] == other]
            known = max([self.prefix_store.longest_prefix(branch, len(branch))[0], *below])
            if len(branch) - known >= MIN_SHARED_PREFIX:
                chosen.append(branch)
        while chosen:  # a branch waits until the shorter ones it extends are stored
            level = [branch for branch in chosen
                     if not any(len(other) < len(branch) and branch[: len(other)] == other for other in chosen)]
            for start in range(0, len(level), self.prefill_rows):
                self.prefill([list(branch) for branch in level[start: start + self.prefill_rows]], remember=True)
            chosen = [branch for branch in chosen if branch not in level]

    def by_fresh_tokens(self, sequences: Sequence[list[int]], keep: int = 1) -> list[int]:
        """Indices of ``sequences``, fewest tokens left to compute first: a padded batch computes its rows up to
        its longest fresh part, so rows batched in this order waste little."""
        fresh = [len(ids) - self.prefix_store.longest_prefix(ids, len(ids) - keep)[0] for ids in sequences]
        return sorted(range(len(sequences)), key=lambda index: (fresh[index], len(sequences[index])))

    @property
    def prefill_rows(self) -> int:
        """Rows per prefill pass. On CPU small groups are faster (16 rows of ~750 tokens: 11.5 s in one pass,
        8.7 s in passes of 4, 10.1 s in passes of 2); on a GPU one pass takes the whole batch."""
        return CPU_PREFILL_ROWS if self.device == "cpu" else GPU_BATCH_CAP

    def choice_probabilities(self, prompts: Sequence[str], choices: Sequence[str]) -> list[list[float]]:
        """P(choice | prompt) renormalised over the choices, for each prompt, in padded batches.

        When the choices start with different tokens one forward pass per prompt suffices; otherwise each
        choice's full token sequence is appended to the prompt and scored (all rows end together under left
        padding, so only the last few positions' logits are kept).
        """
        import torch

        choice_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        if any(not ids for ids in choice_ids):
            raise ValueError(f"every choice needs at least one token: {list(choices)!r}")
        encoded = [self.encode(p) for p in prompts]
        single_token = len({ids[0] for ids in choice_ids}) == len(choices)
        if single_token:
            rows = [(prompt, ()) for prompt in range(len(prompts))]
        else:
            rows = [(prompt, tuple(ids)) for prompt in range(len(prompts)) for ids in choice_ids]
        keep = 1 if single_token else max(len(ids) for ids in choice_ids) + 1
        sequences = [encoded[prompt] + list(tail) for prompt, tail in rows]
        scores = [None] * len(rows)
        capacity = min(self.prefill_rows, self.batch_capacity(max(len(s) for s in sequences)))
        self.remember_shared_prefixes(sequences, keep)
        order = self.by_fresh_tokens(sequences, keep)
        for start in range(0, len(order), capacity):
            chunk = order[start: start + capacity]
            logp = torch.log_softmax(self.prefill([sequences[i] for i in chunk], keep=keep).logits.float(), -1)
            for slot, index in enumerate(chunk):
                scores[index] = _tail_score(logp[slot], rows[index][1], keep, choice_ids, single_token)
        if single_token:
            return [torch.softmax(score, -1).tolist() for score in scores]
        per_prompt = torch.stack(scores).view(len(prompts), len(choices))  # type: ignore[arg-type]
        return torch.softmax(per_prompt, -1).tolist()


@dataclass
class Prefilled:
    """What a prefill leaves: the kept logits, the cache, the mask over its columns and each row's next position."""

    logits: object  # torch.Tensor [rows, keep, vocab]
    cache: object  # transformers Cache
    mask: object  # torch.Tensor [rows, columns]
    next_positions: object  # torch.Tensor [rows]


@dataclass(eq=False)
class DecodeRow:
    """One generation request while it decodes."""

    prompt: str
    ids: list[int]
    params: GenerationParams
    tag: object = None  # the caller's handle for this row
    new_tokens: list[int] = field(default_factory=list)
    finish_reason: str = "length"

    @property
    def tokens_needed(self) -> int:
        return len(self.ids) + self.params.max_new_tokens

    def result(self, tokenizer) -> Generation:
        text, stopped = cut_at_stop(tokenizer.decode(self.new_tokens, skip_special_tokens=True), self.params.stop)
        return Generation(text=text, prompt_tokens=len(self.ids), completion_tokens=len(self.new_tokens),
                          finish_reason="stop" if stopped else self.finish_reason)


class DecodeBatch:
    """Rows decoding together. Rows join after their prefill (:meth:`admit`) and leave the moment they finish
    (:meth:`step`), so nobody waits for the longest row of a batch it happened to start with."""

    def __init__(self, model: LocalModel, cancel: threading.Event | None = None):
        self.model = model
        self.cancel = cancel
        self._eos: set[int] | None = None  # read from the model at the first admission (it may still be loading)
        self._stop_checkers: dict[tuple[str, ...], StopOnText] = {}
        self.clear()

    def __len__(self) -> int:
        return len(self.rows)

    def room(self, waiting: Sequence[DecodeRow]) -> int:
        """How many of the first ``waiting`` rows may join now: rows fit while the batch stays within the model's
        batch capacity for its longest row."""
        longest = max((row.tokens_needed for row in self.rows), default=0)
        count = 0
        for row in waiting:
            longest = max(longest, row.tokens_needed)
            if len(self.rows) + count + 1 > self.model.batch_capacity(longest):
                break
            count += 1
        return count

    def admit(self, rows: Sequence[DecodeRow]) -> list[DecodeRow]:
        """Prefill ``rows`` (their shared prefix once, then groups of :attr:`LocalModel.prefill_rows`) and add them
        to the batch; returns the rows that are already done (no new tokens)."""
        if self._eos is None:
            self._eos = set(_as_list(self.model.model.generation_config.eos_token_id)
                            or _as_list(self.model.tokenizer.eos_token_id))
        done = [row for row in rows if row.params.max_new_tokens <= 0]
        rows = [row for row in rows if row.params.max_new_tokens > 0]
        if not rows:
            return done
        spare = max(row.params.max_new_tokens for row in rows + self.rows)
        self.model.remember_shared_prefixes([row.ids for row in rows])
        rows = [rows[index] for index in self.model.by_fresh_tokens([row.ids for row in rows])]
        step = self.model.prefill_rows
        for start in range(0, len(rows), step):
            joining = rows[start: start + step]
            self._join(joining, self.model.prefill([row.ids for row in joining], remember=True, spare=spare), spare)
        return done

    def _join(self, rows: Sequence[DecodeRow], filled: Prefilled, spare: int) -> None:
        import torch

        from synth.lm.kv import merge_caches

        logits = filled.logits[:, -1]
        if self.rows:
            width = max(self._mask.shape[1], filled.mask.shape[1])
            self._cache = merge_caches(self._cache, filled.cache, spare)
            self._mask = torch.cat([_left_pad(self._mask, width), _left_pad(filled.mask, width)])
            self._next_positions = torch.cat([self._next_positions, filled.next_positions])
            self._logits = torch.cat([self._logits, logits])
        else:
            self._cache, self._mask, self._next_positions, self._logits = (filled.cache, filled.mask,
                                                                           filled.next_positions, logits)
        device = self.model.device
        self.rows.extend(rows)
        self._generators.extend(_seeded_generator(row.prompt, device) if row.params.temperature > 0 else None
                                for row in rows)
        self._stoppers.extend(self._stop_checker(row.params.stop) if row.params.stop else None for row in rows)

    def step(self) -> list[DecodeRow]:
        """Pick every row's next token; finished rows leave; the rest run one forward step. Returns the finished."""
        import torch

        if self.cancel is not None and self.cancel.is_set():
            raise EngineClosed("the engine was closed while this request was running")
        chosen = _pick_tokens(self._logits.float(), [row.params.temperature for row in self.rows], self._generators)
        finished, keep = [], []
        for slot, (row, token) in enumerate(zip(self.rows, chosen.tolist(), strict=True)):
            row.new_tokens.append(token)
            stopper = self._stoppers[slot]
            if token in self._eos or (stopper is not None and stopper(row.new_tokens)):
                row.finish_reason = "stop"
                finished.append(row)
            elif len(row.new_tokens) >= row.params.max_new_tokens:
                finished.append(row)
            else:
                keep.append(slot)
        if len(keep) < len(self.rows):
            kept = set(keep)
            self._remember(finished, [slot for slot in range(len(self.rows)) if slot not in kept])
            self._keep_rows(keep)
            chosen = chosen[keep]
        if self.rows:
            self._mask = torch.cat([self._mask, self._mask.new_ones((len(self.rows), 1))], dim=1)
            with torch.inference_mode(), self.model.attention_kernels():
                self._logits = self.model.model(
                    input_ids=chosen[:, None].to(self.model.device), attention_mask=self._mask,
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
            self.model.prefix_store.put(ran, kv.row_states(self._cache, slot, width - len(ran)))

    def _stop_checker(self, stops: tuple[str, ...]) -> StopOnText:
        """One checker per set of stop strings, kept across requests so its per-token answers are reused."""
        checker = self._stop_checkers.get(stops)
        if checker is None:
            checker = self._stop_checkers[stops] = StopOnText(self.model.tokenizer, stops)
        return checker

    def clear(self) -> None:
        """Drop every row and its states."""
        self.rows, self._generators, self._stoppers = [], [], []
        self._cache = self._mask = self._next_positions = self._logits = None

    def _keep_rows(self, slots: list[int]) -> None:
        import torch

        if not slots:
            self.clear()
            return
        self.rows = [self.rows[s] for s in slots]
        self._generators = [self._generators[s] for s in slots]
        self._stoppers = [self._stoppers[s] for s in slots]
        index = torch.tensor(slots, device=self.model.device)
        self._cache.batch_select_indices(index)
        self._mask, self._next_positions, self._logits = (self._mask[index], self._next_positions[index],
                                                          self._logits[index])
        padding = int(self._mask.any(0).int().argmax())  # columns that are padding in every remaining row
        if padding:
            self._mask = self._mask[:, padding:]
            for layer in self._cache.layers:
                layer.drop_leading(padding)


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


CPU_BATCH_CAP = 16
CPU_PREFILL_ROWS = 4
GPU_BATCH_CAP = 128
GPU_MEMORY_FRACTION = 0.8
MIN_SHARED_PREFIX = 32  # tokens; a shorter common prefix is not worth a separate forward pass
PREFIX_STORE_BYTES = 1 << 30
GPU_PREFIX_STORE_FRACTION = 0.2


class EngineClosed(RuntimeError):
    """Raised to callers whose request was pending or running when the engine was closed."""


def prefix_store_bytes(device: str) -> int:
    """Room for remembered prompt states: 1 GiB of RAM, or on CUDA a fifth of the memory the weights left free.

    A 10-pair fit's stage has 72 judge calls in flight whose prompts and reasonings are scored again after their
    reasoning. The store keeps their shared instructions and demos once, but with a 3B model (~112 kB of states a
    token) 1 GiB still holds under 10k tokens, less than one stage's pairs and reasonings.
    """
    if device != "cuda":
        return PREFIX_STORE_BYTES
    import torch

    free_bytes, _ = torch.cuda.mem_get_info()
    return max(PREFIX_STORE_BYTES, int(free_bytes * GPU_PREFIX_STORE_FRACTION))


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


def _seeded_generator(prompt: str, device: str):
    """Seed from the prompt so the same request samples the same text: fits are reproducible."""
    import torch

    generator = torch.Generator(device=device)
    generator.manual_seed(int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16))
    return generator


def _pick_tokens(logits, temperatures: Sequence[float], generators: Sequence):
    """Greedy for rows at temperature 0, plain sampling (no top-k/top-p) with the row's own generator otherwise."""
    import torch

    chosen = logits.argmax(-1)
    for slot, (temperature, generator) in enumerate(zip(temperatures, generators, strict=True)):
        if generator is not None:
            probs = torch.softmax(logits[slot] / temperature, -1)
            chosen[slot] = torch.multinomial(probs, 1, generator=generator)[0]
    return chosen


class StopOnText:
    """Tells whether a row's latest token completed one of its stop strings (asked after every token).

    A stop string can only be completed by a token whose own text holds its last character (or by a byte piece of
    a longer character), so the row's tail is decoded only after such tokens, and what each token can do is
    learnt once. (Decoding a row's 24-token tail takes ~16 us here: ~1 ms a step at 64 rows.) transformers'
    ``stop_strings`` precomputes tables over the whole vocabulary on every call: seconds with Gemma's 262k tokens.
    """

    def __init__(self, tokenizer, stops: Sequence[str], window: int = 24):
        self.tokenizer = tokenizer
        self.stops = tuple(s for s in stops if s)
        self.window = window
        self._last_characters = {s[-1] for s in self.stops}
        self._may_end: dict[int, bool] = {}

    def __call__(self, tokens: Sequence[int]) -> bool:
        if not tokens or not self.stops:
            return False
        may_end = self._may_end.get(tokens[-1])
        if may_end is None:
            piece = self.tokenizer.decode([tokens[-1]])
            may_end = self._may_end[tokens[-1]] = (not piece or "\ufffd" in piece
                                                   or any(c in piece for c in self._last_characters))
        if not may_end:
            return False
        tail = self.tokenizer.decode(list(tokens[-self.window:]), skip_special_tokens=True)
        return any(stop in tail for stop in self.stops)


def _fold_system(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system and rest:
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    return rest


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Trim generated text at the first stop string (generate() keeps the stop string itself)."""
    positions = [text.find(s) for s in stops if s and s in text]
    if not positions:
        return text, False
    return text[: min(positions)], True


def request_messages(request) -> list[dict[str, str]]:
    """A DSPy lm15 Request as role/content dicts, the shape chat templates take."""
    messages = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
        messages.append({"role": "system", "content": system})
    for message in request.messages:
        role = "user" if message.role == "developer" else message.role
        messages.append({"role": role, "content": message.text or ""})
    return messages


class LocalEngine:
    """DSPy 3.4 engine over a LocalModel: ``complete(Request) -> Response`` plus verdict scoring.

    Calls from DSPy's worker threads are serialised here; ``synth.lm.batching`` replaces this with a scheduler
    that groups them into batches.
    """

    def __init__(self, model: LocalModel):
        self.local_model = model
        self._lock = threading.Lock()

    def generate(self, prompts: Sequence[str], params: Sequence[GenerationParams]) -> list[Generation]:
        with self._lock:
            return self.local_model.generate(prompts, params)

    def choice_probabilities(self, prompts: Sequence[str], choices: Sequence[str]) -> list[list[float]]:
        with self._lock:
            return self.local_model.choice_probabilities(prompts, choices)

    def complete(self, request) -> Response:
        config = request.config
        params = GenerationParams(
            max_new_tokens=config.max_tokens or 512,
            temperature=float(config.temperature or 0.0),
            stop=tuple(config.stop or ()),
        )
        prompt = self.local_model.render(request_messages(request))
        result = self.generate([prompt], [params])[0]
        return Response(
            id=None,
            model=self.local_model.display_name,
            message=Message.assistant([TextPart(result.text)]),
            finish_reason=result.finish_reason,
            usage=Usage(input_tokens=result.prompt_tokens, output_tokens=result.completion_tokens),
        )

    def score_choices(self, messages: Sequence[dict[str, str]], assistant_prefix: str,
                      choices: Sequence[str]) -> list[float]:
        """Probability of each choice as the next words after ``assistant_prefix`` in the assistant turn."""
        prompt = self.local_model.render(messages, assistant_prefix=assistant_prefix)
        return self.choice_probabilities([prompt], choices)[0]

    def stream(self, request):
        return response_to_events(self.complete(request))

    def close(self) -> None:
        """The model is shared by every LM built on it and lives as long as the process."""
