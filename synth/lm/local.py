"""A transformers causal LM in this process, exposed to DSPy 3.4 as an engine (``dspy.LM(..., engine=...)``).

``LocalModel`` owns weights, tokenizer and prompt rendering; ``LocalEngine`` turns DSPy requests into calls on it
and adds ``score_choices``, which reads a verdict from next-token probabilities so a judge never fails to answer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
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
        self._prompt_states: OrderedDict[tuple[int, ...], list[tuple]] = OrderedDict()
        self._prompt_states_lock = threading.Lock()
        self.prompt_state_hits = 0  # scorings that continued a remembered prompt instead of re-reading it

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
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = pick_device(self.device_request)
        if self.dtype_request == "auto":
            dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        else:
            dtype = getattr(torch, self.dtype_request)
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
        per_row = kv_bytes_per_token(model.config, model.dtype) * max(1, row_tokens) + 4 * model.config.vocab_size
        return max(1, min(GPU_BATCH_CAP, int(free_bytes * GPU_MEMORY_FRACTION) // per_row))

    def generate(self, prompts: Sequence[str], params: Sequence[GenerationParams],
                 cancel: threading.Event | None = None) -> list[Generation]:
        """Generate for every prompt, in left-padded batches sized by :meth:`batch_capacity`.

        Each row keeps its own max tokens, temperature (sampling seeded from its prompt, so a request samples the
        same text whatever batch it lands in) and stop strings; a finished row is dropped from the batch and
        its KV cache. Greedy rows give the same text as one-at-a-time ``model.generate``.
        """
        if len(prompts) != len(params):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} generation params")
        encoded = [self.encode(p) for p in prompts]
        results: list[Generation | None] = [None] * len(prompts)
        for rows in self._length_sorted_chunks(encoded, extra=[q.max_new_tokens for q in params]):
            batch = self._generate_batch([prompts[i] for i in rows], [encoded[i] for i in rows],
                                         [params[i] for i in rows], cancel)
            for row, result in zip(rows, batch, strict=True):
                results[row] = result
        return results  # type: ignore[return-value]

    def _length_sorted_chunks(self, encoded: Sequence[list[int]], extra: Sequence[int],
                              rows: Sequence[int] | None = None) -> list[list[int]]:
        """Row indices (all, or ``rows``) grouped by similar length (little padding), each within batch capacity."""
        order = sorted(range(len(encoded)) if rows is None else rows, key=lambda i: len(encoded[i]) + extra[i])
        chunks: list[list[int]] = []
        for index in order:
            if chunks:
                rows = chunks[-1]
                capacity = self.batch_capacity(max(len(encoded[i]) + extra[i] for i in rows + [index]))
                if len(rows) < capacity:
                    rows.append(index)
                    continue
            chunks.append([index])
        return chunks

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

    def _generate_batch(self, prompts: Sequence[str], encoded: Sequence[list[int]],
                        params: Sequence[GenerationParams], cancel: threading.Event | None) -> list[Generation]:
        import torch
        from transformers import DynamicCache

        model, tokenizer = self.model, self.tokenizer
        eos_ids = set(_as_list(model.generation_config.eos_token_id) or _as_list(tokenizer.eos_token_id))
        generators = [_seeded_generator(prompt, self.device) if q.temperature and q.temperature > 0 else None
                      for prompt, q in zip(prompts, params)]
        stoppers = [StopOnText(tokenizer, q.stop, 0) if q.stop else None for q in params]
        new_tokens: list[list[int]] = [[] for _ in prompts]
        finish: list[str] = ["length"] * len(prompts)
        active = [row for row, q in enumerate(params) if q.max_new_tokens > 0]
        if active:
            input_ids, mask, positions = self._padded([encoded[row] for row in active])
            cache = DynamicCache(config=model.config)
            with torch.inference_mode():
                logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                               past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
                self._remember_prompt_states(cache, [encoded[row] for row in active])
                next_positions = positions[:, -1] + 1
                while True:
                    if cancel is not None and cancel.is_set():
                        raise EngineClosed("the engine was closed while this request was running")
                    chosen = _pick_tokens(logits.float(), [params[r].temperature for r in active],
                                          [generators[r] for r in active])
                    keep = []
                    for slot, (row, token) in enumerate(zip(active, chosen.tolist())):
                        new_tokens[row].append(token)
                        stopper = stoppers[row]
                        if token in eos_ids or (stopper is not None and bool(
                                stopper(torch.tensor([new_tokens[row]]), None)[0])):
                            finish[row] = "stop"
                        elif len(new_tokens[row]) < params[row].max_new_tokens:
                            keep.append(slot)
                    if not keep:
                        break
                    if len(keep) < len(active):  # finished rows leave the batch and the cache
                        index = torch.tensor(keep, device=self.device)
                        cache.batch_select_indices(index)
                        mask, chosen, next_positions = mask[index], chosen[index], next_positions[index]
                        active = [active[slot] for slot in keep]
                    mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
                    logits = model(input_ids=chosen[:, None].to(self.device), attention_mask=mask,
                                   position_ids=next_positions[:, None], past_key_values=cache,
                                   use_cache=True).logits[:, -1]
                    next_positions = next_positions + 1
        results = []
        for row, q in enumerate(params):
            text, stopped = cut_at_stop(tokenizer.decode(new_tokens[row], skip_special_tokens=True), q.stop)
            results.append(Generation(text=text, prompt_tokens=len(encoded[row]),
                                      completion_tokens=len(new_tokens[row]),
                                      finish_reason="stop" if stopped else finish[row]))
        return results

    def _remember_prompt_states(self, cache, rows: Sequence[list[int]]) -> None:
        """Keep each prompt's key/value states (pads stripped) so the verdict scoring that follows a judge's
        generation, whose prompt is this prompt plus the reasoning, only runs the new tokens."""
        with self._prompt_states_lock:
            for slot, ids in enumerate(rows):
                layers = []
                for layer in cache.layers:
                    stored = layer.keys.shape[-2]  # sliding layers keep only the window's tail
                    real = min(len(ids), stored)
                    layers.append((layer.keys[slot:slot + 1, :, stored - real:].clone(),
                                   layer.values[slot:slot + 1, :, stored - real:].clone()))
                self._prompt_states[tuple(ids)] = layers
                self._prompt_states.move_to_end(tuple(ids))
            while len(self._prompt_states) > PROMPT_STATE_ENTRIES:
                self._prompt_states.popitem(last=False)

    def _continue_remembered_prompt(self, sequence: list[int], keep: int):
        """Logits of the last ``keep`` positions of ``sequence`` from a remembered prompt prefix, or None."""
        import torch
        from transformers import DynamicCache

        with self._prompt_states_lock:
            prefix = max((key for key in self._prompt_states
                          if len(sequence) - keep >= len(key) > 0 and tuple(sequence[:len(key)]) == key),
                         key=len, default=None)
            layers = self._prompt_states[prefix] if prefix is not None else None
        if layers is None:
            return None
        self.prompt_state_hits += 1
        cache = DynamicCache(config=self.model.config)
        for layer, (keys, values) in zip(cache.layers, layers, strict=True):
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = len(prefix)
        rest = torch.tensor([sequence[len(prefix):]], device=self.device)
        positions = torch.arange(len(prefix), len(sequence), device=self.device)[None]
        return self.model(input_ids=rest, attention_mask=torch.ones((1, len(sequence)), dtype=torch.long,
                                                                    device=self.device),
                          position_ids=positions, past_key_values=cache, use_cache=True,
                          logits_to_keep=keep).logits

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
        scores = [0.0] * len(rows)
        fresh = []
        with torch.inference_mode():
            for index, sequence in enumerate(sequences):
                logits = self._continue_remembered_prompt(sequence, keep)
                if logits is None:
                    fresh.append(index)
                else:
                    scores[index] = _tail_score(torch.log_softmax(logits.float(), -1)[0], rows[index][1], keep,
                                                choice_ids, single_token)
            for chunk in self._length_sorted_chunks(sequences, extra=[0] * len(sequences), rows=fresh):
                input_ids, mask, positions = self._padded([sequences[i] for i in chunk])
                logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                    logits_to_keep=keep).logits
                logp = torch.log_softmax(logits.float(), -1)
                for slot, index in enumerate(chunk):
                    scores[index] = _tail_score(logp[slot], rows[index][1], keep, choice_ids, single_token)
        if single_token:
            return [torch.softmax(score, -1).tolist() for score in scores]
        per_prompt = torch.stack(scores).view(len(prompts), len(choices))  # type: ignore[arg-type]
        return torch.softmax(per_prompt, -1).tolist()


def _tail_score(logp, tail: tuple[int, ...], keep: int, choice_ids: Sequence[list[int]], single_token: bool):
    """Log-probability of the choice: its first token (single-token case) or its whole tail."""
    import torch

    if single_token:
        return logp[-1, [ids[0] for ids in choice_ids]]
    steps = logp[keep - 1 - len(tail): keep - 1]
    return steps[torch.arange(len(tail)), torch.tensor(tail, device=steps.device)].sum()


CPU_BATCH_CAP = 16
PROMPT_STATE_ENTRIES = 32
GPU_BATCH_CAP = 128
GPU_MEMORY_FRACTION = 0.8


class EngineClosed(RuntimeError):
    """Raised to callers whose request was pending or running when the engine was closed."""


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
    for slot, (temperature, generator) in enumerate(zip(temperatures, generators)):
        if generator is not None:
            probs = torch.softmax(logits[slot] / temperature, -1)
            chosen[slot] = torch.multinomial(probs, 1, generator=generator)[0]
    return chosen


class StopOnText:
    """Stop a row once its generated tail contains a stop string.

    transformers' own ``stop_strings`` precomputes tables over the whole vocabulary on every call, which costs
    seconds with Gemma's 262k tokens; decoding the last few tokens of each row is enough here.
    """

    def __init__(self, tokenizer, stops: Sequence[str], prompt_length: int, window: int = 24):
        self.tokenizer = tokenizer
        self.stops = tuple(s for s in stops if s)
        self.prompt_length = prompt_length
        self.window = window

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        start = max(self.prompt_length, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        return torch.tensor([any(s in tail for s in self.stops) for tail in tails], device=input_ids.device)


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
