"""A transformers causal LM in this process, exposed to DSPy 3.4 as an engine (``dspy.LM(..., engine=...)``).

``LocalModel`` owns weights, tokenizer and prompt rendering; ``LocalEngine`` turns DSPy requests into calls on it
and adds ``score_choices``, which reads a verdict from next-token probabilities so a judge never fails to answer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events

log = logging.getLogger(__name__)

PLAIN_ROLE_NAMES = {"system": "", "user": "User", "assistant": "Assistant", "developer": "Instructions"}


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

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = pick_device(self.device_request)
        if self.dtype_request == "auto":
            dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        else:
            dtype = getattr(torch, self.dtype_request)
        if self.is_gguf:
            cached = self._gguf_cache_path()
            if not (cached / "config.json").exists():
                self._convert_gguf(cached)
            tokenizer = AutoTokenizer.from_pretrained(cached)
            model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
        else:
            tokenizer = AutoTokenizer.from_pretrained(self.source)
            model = AutoModelForCausalLM.from_pretrained(self.source, dtype=dtype)
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
        """Chat template when the tokenizer has one; otherwise a plain transcript a base model can continue."""
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
        blocks.append(f"Assistant: {assistant_prefix}" if assistant_prefix else "Assistant:")
        return "\n\n".join(blocks)

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=not self.has_chat_template)["input_ids"]
        if len(ids) > self.max_input_tokens:  # keep the end: it holds the pair being judged and the answer slot
            ids = ids[:1] + ids[-(self.max_input_tokens - 1):]
        return ids

    # ---- inference -----------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], params: Sequence[GenerationParams]) -> list[Generation]:
        """Generate for each prompt. The plain path runs them one by one; a batching engine groups them."""
        return [self._generate_one(p, q) for p, q in zip(prompts, params, strict=True)]

    def _generate_one(self, prompt: str, params: GenerationParams) -> Generation:
        import torch

        ids = self.encode(prompt)
        input_ids = torch.tensor([ids], device=self.device)
        kwargs = dict(max_new_tokens=params.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
        if params.stop:
            kwargs.update(stopping_criteria=[StopOnText(self.tokenizer, params.stop, len(ids))])
        if params.temperature and params.temperature > 0:
            # Seed from the prompt so the same request samples the same text: fits are reproducible.
            torch.manual_seed(int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16))
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            output = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        new_tokens = output[0, len(ids):].tolist()
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        text, stopped = cut_at_stop(text, params.stop)
        eos_hit = bool(new_tokens) and new_tokens[-1] == self.tokenizer.eos_token_id
        finish = "stop" if stopped or eos_hit or len(new_tokens) < params.max_new_tokens else "length"
        return Generation(text=text, prompt_tokens=len(ids), completion_tokens=len(new_tokens), finish_reason=finish)

    def choice_probabilities(self, prompts: Sequence[str], choices: Sequence[str]) -> list[list[float]]:
        """P(choice | prompt) renormalised over the choices, for each prompt.

        When the choices start with different tokens one forward pass per prompt suffices; otherwise each
        choice's full token sequence is scored.
        """
        return [self._choice_probabilities_one(p, choices) for p in prompts]

    def _choice_probabilities_one(self, prompt: str, choices: Sequence[str]) -> list[float]:
        import torch

        prompt_ids = self.encode(prompt)
        choice_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        with torch.inference_mode():
            if len({ids[0] for ids in choice_ids}) == len(choices):
                logits = self.model(input_ids=torch.tensor([prompt_ids], device=self.device)).logits[0, -1]
                scores = torch.log_softmax(logits.float(), -1)[[ids[0] for ids in choice_ids]]
            else:
                totals = []
                for ids in choice_ids:
                    full = torch.tensor([prompt_ids + ids], device=self.device)
                    logp = torch.log_softmax(self.model(input_ids=full).logits[0].float(), -1)
                    positions = range(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(ids))
                    totals.append(sum(logp[pos, tok] for pos, tok in zip(positions, ids)))
                scores = torch.stack(totals)
        return torch.softmax(scores, -1).tolist()


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
