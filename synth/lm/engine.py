"""A local model as a DSPy 3.4 engine (``dspy.LM(..., engine=...)``), and the process's engines, one per model.

:class:`LocalEngine` turns DSPy requests into jobs for its scheduler and adds ``score_choices``, which reads a
verdict from next-token probabilities so a judge never fails to answer, and ``stream_text``, which hands out a
reply's text as the shared decoding batch writes it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Sequence

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events

from synth.lm.config import EngineConfig
from synth.lm.loading import LocalModel, pick_device, pick_quantization
from synth.lm.prompts import PromptFormat, request_messages
from synth.lm.runner import Generation, ModelRunner, context_tokens
from synth.lm.sampling import GenerationParams, TextPieces
from synth.lm.scheduler import Job, Scheduler, SchedulerStats


class LocalEngine:
    """DSPy engine over a local model: ``complete(Request) -> Response``, ``score_choices``, ``stream``, ``close``.

    Calls from any number of threads go through one :class:`synth.lm.scheduler.Scheduler`, which batches them
    unless ``config.batching`` is off. The model loads on the first call (or earlier, by ``local_model.load()``).
    """

    def __init__(self, model: LocalModel, config: EngineConfig | None = None):
        self.local_model = model
        self.config = config or EngineConfig()
        self.scheduler = Scheduler(model, self.config)

    @property
    def prompts(self) -> PromptFormat:
        """How this model is prompted (loads the model on first use); no prompt may fill the whole context."""
        return PromptFormat(self.local_model.tokenizer, min(self.config.max_input_tokens, self.context_tokens - 1))

    @property
    def context_tokens(self) -> int:
        """Tokens one request may hold, prompt and reply together: the model's context within
        ``config.max_context_tokens`` (loads the model on first use). Longer replies are cut at it."""
        return context_tokens(self.local_model.model.config, self.config)

    @property
    def runner(self) -> ModelRunner:
        return self.scheduler.runner

    @property
    def stats(self) -> SchedulerStats:
        return self.scheduler.stats

    @property
    def is_closed(self) -> bool:
        return self.scheduler.is_closed

    def generate(self, prompts: Sequence[str], params: Sequence[GenerationParams]) -> list[Generation]:
        """Generate for every rendered prompt, each with its own params."""
        if len(prompts) != len(params):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} generation params")
        encode = self.prompts.encode
        return self.scheduler.run([Job(prompt, encode(prompt), params=q)
                                   for prompt, q in zip(prompts, params, strict=True)])

    def choice_probabilities(self, prompts: Sequence[str], choices: Sequence[str]) -> list[list[float]]:
        """P(choice | prompt) renormalised over ``choices``, for every rendered prompt."""
        encode = self.prompts.encode
        return self.scheduler.run([Job(prompt, encode(prompt), choices=tuple(choices)) for prompt in prompts])

    def complete(self, request) -> Response:
        config = request.config
        params = GenerationParams(
            max_new_tokens=config.max_tokens or 512,
            temperature=float(config.temperature or 0.0),
            stop=tuple(config.stop or ()),
        )
        prompt = self.prompts.render(request_messages(request))
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
        prompt = self.prompts.render(messages, assistant_prefix=assistant_prefix)
        return self.choice_probabilities([prompt], choices)[0]

    def stream(self, request):
        return response_to_events(self.complete(request))

    def stream_text(self, messages: Sequence[dict[str, str]], params: GenerationParams,
                    cancel: threading.Event | None = None) -> TextStream:
        """Start generating a reply to ``messages`` now and return its text as it is decoded (see
        :class:`TextStream`). The row decodes in the shared batch like any other request, for the current owner."""
        prompts = self.prompts
        prompt = prompts.render(messages)
        stream = TextStream(self.local_model.tokenizer, params.stop, cancel)
        flags = (stream.closed,) if cancel is None else (stream.closed, cancel)
        job = Job(prompt, prompts.encode(prompt), params=params, cancels=flags, on_token=stream.tokens.put)
        job.future.add_done_callback(lambda _: stream.tokens.put(None))
        stream.job = job
        self.scheduler.submit([job])
        return stream

    def close(self, timeout: float = 30.0) -> None:
        """Stop the scheduler: unanswered calls fail with EngineClosed, later ones are refused. The weights stay
        loaded for any other engine on the same model."""
        self.scheduler.close(timeout)

    def as_lm(self, *, max_tokens: int = 512, cache: bool = True) -> dspy.LM:
        """A ``dspy.LM`` on this engine (greedy by default; a call may ask for a temperature)."""
        return dspy.LM(f"local/{self.local_model.display_name}", engine=self, temperature=0.0, max_tokens=max_tokens,
                       cache=cache)


class TextStream:
    """A reply's text in pieces as the engine decodes it: iterate it for the pieces, ``close()`` it (or set the
    ``cancel`` event given) to drop the row from the batch. Text is held back while it could still turn into a stop
    string or ends inside a character, so the pieces joined are the reply the engine returns. The engine's error,
    if any, is raised by the iteration."""

    POLL_SECONDS = 0.1  # how often a waiting reader looks at its cancel event

    def __init__(self, tokenizer, stops: Sequence[str], cancel: threading.Event | None = None):
        self.tokens: queue.SimpleQueue = queue.SimpleQueue()  # token ids from the worker; None: the row ended
        self.closed = threading.Event()  # the job's own cancel flag
        self.job: Job | None = None
        self._cancel = cancel
        self._pieces = TextPieces(tokenizer, stops)
        self._iterator = self._read()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._iterator)

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading (from any thread); an unfinished row is dropped from the batch at the next step."""
        self.closed.set()
        with contextlib.suppress(ValueError):  # being read on another thread now: that read ends by itself
            self._iterator.close()

    def _read(self) -> Iterator[str]:
        try:
            while True:
                if self.closed.is_set() or (self._cancel is not None and self._cancel.is_set()):
                    return
                try:
                    token = self.tokens.get(timeout=self.POLL_SECONDS)
                except queue.Empty:
                    continue
                if token is None:
                    break
                piece = self._pieces.add(token)
                if piece:
                    yield piece
            rest = self._pieces.finish(self.job.future.result().text)
            if rest:
                yield rest
        finally:
            self.closed.set()


class EngineRegistry:
    """The local engines of a process, one per (model source, device, quantization) as they resolve on this machine:
    every LM built for a model shares one copy of its weights and one scheduler, also when two callers ask in other
    words for the same load ("auto" and "cpu" on a CPU-only machine; quantization "auto" and "none" where the CPU
    runs bf16). An engine is made on first request with ``EngineConfig.from_env()``; a closed one is replaced by a
    new engine over the same weights."""

    def __init__(self):
        self._engines: dict[tuple[str, str, str], LocalEngine] = {}
        self._lock = threading.Lock()

    def get(self, source: str, device: str = "auto", quantize: str = "none") -> LocalEngine:
        resolved_device = pick_device(device)
        key = (source, resolved_device, pick_quantization(resolved_device, "auto", quantize))
        with self._lock:
            engine = self._engines.get(key)
            if engine is None or engine.is_closed:
                model = (engine.local_model if engine is not None
                         else LocalModel(source, device=device, quantize=quantize))
                engine = self._engines[key] = LocalEngine(model, EngineConfig.from_env())
            return engine
