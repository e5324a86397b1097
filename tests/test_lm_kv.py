"""The key/value states module: the prefix store's radix tree and eviction, and the growing cache layer."""

from __future__ import annotations

import torch

from synth.lm.kv import GrowingLayer, PrefixStore


def test_prefix_store_keeps_shared_parts_once_and_reuses_part_of_any_sequence():
    def states(ids):  # one layer; a token's key is its id, its value minus its id
        column = torch.tensor(ids, dtype=torch.float32).view(1, 1, len(ids), 1)
        return [(column, -column)]

    store = PrefixStore(max_bytes=1 << 20)
    store.put([1, 2, 3, 4], states([1, 2, 3, 4]))
    store.put([1, 2, 5], states([1, 2, 5]))
    store.put([1, 2], states([1, 2]))  # already inside the tree: nothing new
    assert store.stored_tokens == 5 and len(store) == 3  # [1, 2] -> [3, 4] | [5]
    assert store.nbytes == 2 * 5 * 4

    count, pieces = store.longest_prefix([1, 2, 3, 9], limit=10)  # part of a stored sequence
    assert count == 3
    keys = torch.cat([piece[0][0] for piece in pieces], dim=-2)[..., :count, :]
    assert keys.flatten().tolist() == [1, 2, 3]
    assert store.longest_prefix([1, 2, 3, 4], limit=2)[0] == 2
    assert store.longest_prefix([7, 1], limit=2) == (0, [])

    state = states([1, 2, 3, 4])
    store.put([1, 2, 3, 4], state)
    state[0][0].fill_(0)  # the store holds copies, not the caller's tensors
    assert store.longest_prefix([1, 2, 3, 4], limit=4)[1][1][0][0].flatten().tolist() == [3, 4]


def test_prefix_store_drops_least_recently_used_leaves_first():
    def states(count):
        return [(torch.zeros(1, 1, count, 1), torch.zeros(1, 1, count, 1))]  # 8 bytes a token

    store = PrefixStore(max_bytes=8 * 9)
    store.put([1, 2, 3, 4], states(4))
    store.put([1, 2, 5, 6], states(4))  # 6 tokens stored: [1, 2] -> [3, 4] | [5, 6]
    store.longest_prefix([1, 2, 3, 4], limit=4)  # [3, 4] is now used more recently than [5, 6]
    store.put([1, 2, 7, 8, 9, 10], states(6))  # 10 tokens: over the limit, the oldest leaf goes
    assert store.longest_prefix([1, 2, 5, 6], limit=4)[0] == 2
    assert store.longest_prefix([1, 2, 3, 4], limit=4)[0] == 4
    assert store.nbytes == 8 * 8 and store.stored_tokens == 8
    store.put([20] * 12, states(12))  # larger than the store: kept while it is the newest, everything else goes
    assert store.stored_tokens == 12 and store.longest_prefix([20] * 12, limit=12)[0] == 12


def test_growing_layer_keeps_its_columns_through_growth_selection_and_trimming():
    layer = GrowingLayer(reserve=1)
    first = torch.arange(2 * 1 * 3 * 2, dtype=torch.float32).view(2, 1, 3, 2)
    layer.update(first, -first)
    for step in range(5):  # outgrows the reserved column
        column = torch.full((2, 1, 1, 2), 100.0 + step)
        keys, values = layer.update(column, -column)
    assert layer.get_seq_length() == 8 and keys.shape == (2, 1, 8, 2)
    assert torch.equal(keys[:, :, :3], first) and torch.equal(values[:, :, 3:], -keys[:, :, 3:])
    layer.batch_select_indices(torch.tensor([1]))
    layer.drop_leading(2)
    assert layer.get_seq_length() == 6 and torch.equal(layer.keys[0, 0, 0], first[1, 0, 2])
    keys, _ = layer.update(torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))
    assert keys.shape == (1, 1, 7, 2) and torch.equal(keys[0, 0, -2], torch.full((2,), 104.0))

    sliding = GrowingLayer(window=3)
    sliding.update(first, first)
    assert sliding.get_mask_sizes(query_length=1) == (3, 1)  # 2 visible columns + the new one, from column 1
    keys, _ = sliding.update(column, column)
    assert keys.shape == (2, 1, 3, 2) and torch.equal(keys[:, :, :2], first[:, :, 1:])
    assert sliding.get_seq_length() == 4 and sliding.keys.shape == (2, 1, 4, 2)  # everything is still stored
