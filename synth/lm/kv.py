"""Key/value states for the local engine: a batch cache that grows in place, and a radix tree of computed prefixes.

Every layer stores every column, sliding-window layers included, so any remembered prefix can seed a row; a
sliding-window layer shows attention only its last ``window - 1`` columns plus the new ones, as transformers'
own sliding cache does. Rows are always left-padded (pads only before a row's first token), so column distances
equal position distances and the sliding-window mask stays exact.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import Cache, DynamicLayer, get_layer_types_and_kwargs

LayerStates = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values, each [1, kv_heads, tokens, dim]
Pieces = list[LayerStates]  # the states of consecutive token spans, in order


class GrowingLayer(DynamicLayer):
    """One layer's keys and values for a batch of rows, in a buffer with spare columns.

    DynamicLayer concatenates the whole cache on every decoding step (about 15% of a CPU step here); this writes
    the new column in place and doubles the buffer only when it is full.
    """

    def __init__(self, window: int | None = None, keys: torch.Tensor | None = None,
                 values: torch.Tensor | None = None, length: int = 0, reserve: int = 0, limit: int | None = None):
        super().__init__()
        self.window = window  # a sliding-window layer's span; None for full attention
        self.is_sliding = window is not None
        self.length = length
        self.reserve = reserve  # extra columns to allocate when the first states arrive
        self.limit = limit  # the most columns a buffer is given room for (the model's context); None: no bound
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
            self._grow(columns_for(needed, max(self.reserve, 2 * self._key_buffer.shape[-2] - needed), self.limit))
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


def columns_for(needed: int, spare: int, limit: int | None) -> int:
    """Columns to allocate for ``needed`` and up to ``spare`` more, never more than ``limit`` (unless ``needed``
    alone is more)."""
    wanted = needed + max(0, spare)
    return wanted if limit is None else max(needed, min(wanted, limit))


def empty_cache(windows: Sequence[int | None], reserve: int, limit: int | None = None) -> Cache:
    return Cache(layers=[GrowingLayer(window, reserve=reserve, limit=limit) for window in windows])


def cache_from_prefixes(prefixes: Sequence[Pieces], tokens: Sequence[int], width: int, spare: int,
                        windows: Sequence[int | None], limit: int | None = None) -> Cache:
    """A cache of ``width`` columns whose row ``r`` ends with the first ``tokens[r]`` positions held by the
    pieces ``prefixes[r]`` (right-aligned, zeros before them: the padding), with room for ``spare`` more columns
    within ``limit``."""
    template = next(pieces[0] for pieces in prefixes if pieces)
    columns = columns_for(width, spare, limit)
    layers = []
    for index, ((keys, values), window) in enumerate(zip(template, windows, strict=True)):
        buffers = []
        for part, reference in ((0, keys), (1, values)):
            buffer = reference.new_zeros((len(prefixes), reference.shape[1], columns, reference.shape[-1]))
            for row, (pieces, count) in enumerate(zip(prefixes, tokens, strict=True)):
                column = width - count
                for piece in pieces:
                    take = min(width - column, piece[index][part].shape[-2])
                    if take <= 0:
                        break
                    buffer[row, :, column: column + take] = piece[index][part][0, :, :take]
                    column += take
            buffers.append(buffer)
        layers.append(GrowingLayer(window, *buffers, length=width, limit=limit))
    return Cache(layers=layers)


def merge_caches(first: Cache, second: Cache, spare: int, limit: int | None = None) -> Cache:
    """Rows of both caches in one cache, each side left-padded to the wider width, with room for ``spare`` more
    columns within ``limit``."""
    width = max(first.get_seq_length(), second.get_seq_length())
    columns = columns_for(width, spare, limit)
    layers = []
    for a, b in zip(first.layers, second.layers, strict=True):
        buffers = []
        for part_a, part_b in ((a.keys, b.keys), (a.values, b.values)):
            rows = part_a.shape[0] + part_b.shape[0]
            buffer = part_a.new_zeros((rows, part_a.shape[1], columns, part_a.shape[-1]))
            buffer[: part_a.shape[0], :, width - part_a.shape[-2]: width] = part_a
            buffer[part_a.shape[0]:, :, width - part_b.shape[-2]: width] = part_b
            buffers.append(buffer)
        layers.append(GrowingLayer(a.window, *buffers, length=width, limit=limit))
    return Cache(layers=layers)


def row_states(cache: Cache, row: int, start: int) -> LayerStates:
    """Row ``row``'s states from column ``start`` on (its padding dropped): views into the batch, which
    :meth:`PrefixStore.put` copies only where they are new to it."""
    return [(layer.keys[row: row + 1, :, start:], layer.values[row: row + 1, :, start:]) for layer in cache.layers]


@dataclass(eq=False)
class _Node:
    """An edge of the prefix tree: the states of ``tokens``, which follow the parent's tokens."""

    tokens: tuple[int, ...]
    states: LayerStates
    parent: _Node | None
    children: dict[int, _Node] = field(default_factory=dict)
    last_used: int = 0

    @property
    def nbytes(self) -> int:
        return sum(keys.nbytes + values.nbytes for keys, values in self.states)


def _matching(tokens: tuple[int, ...], ids: Sequence[int], start: int) -> int:
    """How many of ``tokens`` equal ``ids[start:]`` from the first on."""
    end = min(len(tokens), len(ids) - start)
    if tokens[:end] == tuple(ids[start: start + end]):  # the usual case, compared in C
        return end
    count = 0
    while tokens[count] == ids[start + count]:
        count += 1
    return count


def _sliced(states: LayerStates, start: int, end: int | None = None) -> LayerStates:
    return [(keys[..., start:end, :], values[..., start:end, :]) for keys, values in states]


class PrefixStore:
    """Computed key/value states of token sequences (prompts, shared instructions and demos, finished generations)
    in a radix tree, so a shared part is stored once and any new sequence starts from the longest part of any
    stored one it begins with, not only from whole stored sequences: a judge prompt with the same demos as one
    already run reuses them, a verdict scoring reuses its own reasoning. Least recently used leaves are dropped
    once the states hold more than ``max_bytes`` (never those of the sequence being stored).
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.clear()

    def __len__(self) -> int:
        """Stored token spans (tree edges)."""
        with self._lock:
            return len(self._nodes())

    @property
    def stored_tokens(self) -> int:
        with self._lock:
            return sum(len(node.tokens) for node in self._nodes())

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._root = _Node((), [], None)
            self._bytes = 0
            self._clock = 0

    def put(self, ids: Sequence[int], states: LayerStates) -> None:
        """Store ``states`` (one per layer, ``[1, kv_heads, len(ids), dim]``, views allowed) for ``ids``;
        only the tokens not stored yet are copied."""
        with self._lock:
            self._clock += 1
            node, position = self._root, 0
            while position < len(ids):
                node.last_used = self._clock
                child = node.children.get(ids[position])
                if child is None:
                    leaf = _Node(tuple(ids[position:]), [(k.clone(), v.clone()) for k, v in
                                                          _sliced(states, position)], node, last_used=self._clock)
                    node.children[leaf.tokens[0]] = leaf
                    self._bytes += leaf.nbytes
                    break
                matched = _matching(child.tokens, ids, position)
                if matched < len(child.tokens) and position + matched < len(ids):
                    self._split(child, matched)
                node, position = child, position + matched
            node.last_used = self._clock
            self._evict()

    def longest_prefix(self, ids: Sequence[int], limit: int) -> tuple[int, Pieces]:
        """How many leading tokens of ``ids`` (at most ``limit``) have stored states, and those states as
        consecutive pieces (the last one may hold more tokens than it counts)."""
        with self._lock:
            self._clock += 1
            node, position, pieces = self._root, 0, []
            limit = min(limit, len(ids))
            while position < limit:
                child = node.children.get(ids[position])
                if child is None:
                    break
                matched = min(_matching(child.tokens, ids, position), limit - position)
                child.last_used = self._clock
                pieces.append(child.states)
                position += matched
                if matched < len(child.tokens):
                    break
                node = child
            return position, pieces

    def _split(self, node: _Node, at: int) -> None:
        """Cut ``node``'s edge after ``at`` tokens; both halves get their own copies, so either can be dropped."""
        tail = _Node(node.tokens[at:], [(k.clone(), v.clone()) for k, v in _sliced(node.states, at)], node,
                     node.children, node.last_used)
        for child in tail.children.values():
            child.parent = tail
        node.tokens, node.states = node.tokens[:at], [(k.clone(), v.clone()) for k, v in _sliced(node.states, 0, at)]
        node.children = {tail.tokens[0]: tail}

    def _evict(self) -> None:
        """Drop least recently used leaves until the states fit; a parent left without children becomes a leaf in
        turn. One walk of the tree, however many leaves go (this runs in the decoding loop)."""
        if self._bytes <= self.max_bytes:
            return
        leaves = [(node.last_used, id(node), node) for node in self._nodes() if not node.children]
        heapq.heapify(leaves)
        while self._bytes > self.max_bytes and leaves:
            last_used, _, oldest = heapq.heappop(leaves)
            if last_used >= self._clock:  # the sequence being stored, and nothing older is left
                return
            parent = oldest.parent
            del parent.children[oldest.tokens[0]]
            self._bytes -= oldest.nbytes
            if parent is not self._root and not parent.children:
                heapq.heappush(leaves, (parent.last_used, id(parent), parent))

    def _nodes(self) -> list[_Node]:
        nodes, stack = [], list(self._root.children.values())
        while stack:
            node = stack.pop()
            nodes.append(node)
            stack.extend(node.children.values())
        return nodes
