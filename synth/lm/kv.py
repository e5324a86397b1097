"""Key/value states for the local engine: a batch cache that grows in place, and a store of computed prefixes.

Every layer stores every column, sliding-window layers included, so any remembered prefix can seed a row; a
sliding-window layer shows attention only its last ``window - 1`` columns plus the new ones, as transformers'
own sliding cache does. Rows are always left-padded (pads only before a row's first token), so column distances
equal position distances and the sliding-window mask stays exact.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer, get_layer_types_and_kwargs

LayerStates = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values, each [1, kv_heads, tokens, dim]


class GrowingLayer(DynamicLayer):
    """One layer's keys and values for a batch of rows, in a buffer with spare columns.

    DynamicLayer concatenates the whole cache on every decoding step (about 15% of a CPU step here); this writes
    the new column in place and doubles the buffer only when it is full.
    """

    def __init__(self, window: int | None = None, keys: torch.Tensor | None = None,
                 values: torch.Tensor | None = None, length: int = 0, reserve: int = 0):
        super().__init__()
        self.window = window  # a sliding-window layer's span; None for full attention
        self.is_sliding = window is not None
        self.length = length
        self.reserve = reserve  # extra columns to allocate when the first states arrive
        if keys is not None:
            self._set_buffers(keys, values)

    def _set_buffers(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self._key_buffer, self._value_buffer = keys, values
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self.keys = keys[..., : self.length, :]
        self.values = values[..., : self.length, :]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self._set_buffers(key_states[..., :0, :], value_states[..., :0, :])

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        needed = self.length + key_states.shape[-2]
        if needed > self._key_buffer.shape[-2]:
            self._grow(max(needed + self.reserve, 2 * self._key_buffer.shape[-2]))
        self._key_buffer[..., self.length: needed, :] = key_states
        self._value_buffer[..., self.length: needed, :] = value_states
        self.length = needed
        self._set_buffers(self._key_buffer, self._value_buffer)
        if self.window is None:
            return self.keys, self.values
        visible = self.window - 1 + key_states.shape[-2]
        return self.keys[..., -visible:, :], self.values[..., -visible:, :]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """Columns attention sees (and the first one's index): everything, or a sliding window's tail."""
        if self.window is None:
            return self.length + query_length, 0
        return min(self.length, self.window - 1) + query_length, max(self.length - self.window + 1, 0)

    def _grow(self, columns: int) -> None:
        def wider(buffer: torch.Tensor) -> torch.Tensor:
            grown = buffer.new_zeros((*buffer.shape[:-2], columns, buffer.shape[-1]))
            grown[..., : self.length, :] = buffer[..., : self.length, :]
            return grown

        self._set_buffers(wider(self._key_buffer), wider(self._value_buffer))

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._set_buffers(self._key_buffer[indices], self._value_buffer[indices])

    def drop_leading(self, columns: int) -> None:
        """Forget the first ``columns`` columns (padding every row has)."""
        self.length -= columns
        self._set_buffers(self._key_buffer[..., columns:, :], self._value_buffer[..., columns:, :])


def layer_windows(config) -> list[int | None]:
    """Each layer's sliding window (None: full attention), as transformers reads it from the config."""
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    layer_types, layer_kwargs = get_layer_types_and_kwargs(config)
    windows = []
    for layer_type, kwargs in zip(layer_types, layer_kwargs, strict=True):
        if layer_type not in ("full_attention", "sliding_attention"):
            raise ValueError(f"the local engine runs full and sliding-window attention; this model has "
                             f"{layer_type!r} layers")
        windows.append(kwargs.get("sliding_window") if layer_type == "sliding_attention" else None)
    return windows


def empty_cache(windows: Sequence[int | None], reserve: int) -> Cache:
    return Cache(layers=[GrowingLayer(window, reserve=reserve) for window in windows])


def cache_from_prefixes(prefixes: Sequence[LayerStates | None], tokens: Sequence[int], width: int,
                        spare: int, windows: Sequence[int | None]) -> Cache:
    """A cache of ``width`` columns whose row ``r`` ends with the first ``tokens[r]`` positions of
    ``prefixes[r]`` (right-aligned, zeros before it: the padding), with room for ``spare`` more columns."""
    template = next(states for states in prefixes if states is not None)
    layers = []
    for index, ((keys, values), window) in enumerate(zip(template, windows, strict=True)):
        buffers = []
        for part, reference in ((0, keys), (1, values)):
            buffer = reference.new_zeros((len(prefixes), reference.shape[1], width + spare, reference.shape[-1]))
            for row, (states, count) in enumerate(zip(prefixes, tokens, strict=True)):
                if count:
                    buffer[row, :, width - count: width] = states[index][part][0, :, :count]
            buffers.append(buffer)
        layers.append(GrowingLayer(window, *buffers, length=width))
    return Cache(layers=layers)


def merge_caches(first: Cache, second: Cache, spare: int) -> Cache:
    """Rows of both caches in one cache, each side left-padded to the wider width."""
    width = max(first.get_seq_length(), second.get_seq_length())
    layers = []
    for a, b in zip(first.layers, second.layers, strict=True):
        buffers = []
        for part_a, part_b in ((a.keys, b.keys), (a.values, b.values)):
            rows = part_a.shape[0] + part_b.shape[0]
            buffer = part_a.new_zeros((rows, part_a.shape[1], width + spare, part_a.shape[-1]))
            buffer[: part_a.shape[0], :, width - part_a.shape[-2]: width] = part_a
            buffer[part_a.shape[0]:, :, width - part_b.shape[-2]: width] = part_b
            buffers.append(buffer)
        layers.append(GrowingLayer(a.window, *buffers, length=width))
    return Cache(layers=layers)


def row_states(cache: Cache, row: int, start: int) -> LayerStates:
    """Row ``row``'s states from column ``start`` on (its padding dropped), copied out of the batch."""
    return [(layer.keys[row: row + 1, :, start:].clone(), layer.values[row: row + 1, :, start:].clone())
            for layer in cache.layers]


@dataclass
class _Entry:
    states: LayerStates
    nbytes: int


class PrefixStore:
    """Computed key/value states of token prefixes (prompts, shared instructions and demos), least recently used
    dropped first once they hold more than ``max_bytes``."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def put(self, ids: Sequence[int], states: LayerStates) -> None:
        key = tuple(ids)
        nbytes = sum(k.nbytes + v.nbytes for k, v in states)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return
            self._entries[key] = _Entry(states, nbytes)
            self._bytes += nbytes
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.nbytes

    def longest_prefix(self, ids: Sequence[int], limit: int) -> tuple[int, LayerStates | None]:
        """The longest stored prefix of ``ids`` no longer than ``limit`` tokens: (its length, its states)."""
        best: tuple[int, ...] | None = None
        with self._lock:
            for key in self._entries:
                if (best is None or len(key) > len(best)) and 0 < len(key) <= min(limit, len(ids)) \
                        and tuple(ids[: len(key)]) == key:
                    best = key
            if best is None:
                return 0, None
            self._entries.move_to_end(best)
            return len(best), self._entries[best].states
