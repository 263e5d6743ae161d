"""Tree bookkeeping: covers, completed blocks and cover changes against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.errors import ConfigurationError
from veilfl.privacy.tree import (
    TreeNode,
    completed_nodes,
    cover,
    cover_change,
    levels_used,
)


def _all_nodes_up_to(step: int) -> list[TreeNode]:
    """Every block that completes within ``step`` rounds, by enumeration."""
    return [
        TreeNode(level, index)
        for level in range(step.bit_length() + 1)
        for index in range(1, step + 2)
        if TreeNode(level, index).last <= step
    ]


@settings(max_examples=300, deadline=None)
@given(step=st.integers(0, 10**9))
def test_the_cover_tiles_the_prefix_with_one_block_per_set_bit(step: int) -> None:
    blocks = cover(step)
    assert len(blocks) == bin(step).count("1")
    position = 1
    for block in blocks:  # contiguous, in order, dyadic
        assert block.first == position
        assert block.last - block.first + 1 == 2**block.level
        position = block.last + 1
    assert position == step + 1


@pytest.mark.parametrize("step", range(1, 70))
def test_completed_nodes_are_exactly_the_blocks_ending_at_the_step(step: int) -> None:
    expected = sorted(node for node in _all_nodes_up_to(step) if node.last == step)
    assert sorted(completed_nodes(step)) == expected


@settings(max_examples=300, deadline=None)
@given(step=st.integers(1, 10**9))
def test_the_cover_changes_by_the_blocks_cover_change_names(step: int) -> None:
    change = cover_change(step)
    assert set(cover(step)) == (set(cover(step - 1)) - set(change.removed)) | {change.added}
    assert set(change.removed) <= set(cover(step - 1))
    assert change.added not in cover(step - 1)


def test_each_used_block_enters_once_has_an_odd_index_and_never_comes_back() -> None:
    entered: list[TreeNode] = []
    retired: set[TreeNode] = set()
    for step in range(1, 1025):
        change = cover_change(step)
        entered.append(change.added)
        retired.update(change.removed)
        assert not retired & set(cover(step))
    used = set(itertools.chain.from_iterable(cover(step) for step in range(1, 1025)))
    assert used == set(entered) and len(entered) == len(used)
    assert all(node.index % 2 == 1 for node in used)


@settings(max_examples=100, deadline=None)
@given(stream=st.lists(st.integers(-1000, 1000), min_size=1, max_size=200))
def test_prefix_sums_are_sums_of_cover_blocks(stream: list[int]) -> None:
    values = np.array(stream)
    for step in range(1, len(stream) + 1):
        from_blocks = sum(int(values[b.first - 1 : b.last].sum()) for b in cover(step))
        assert from_blocks == int(values[:step].sum())


def test_levels_used_counts_levels_with_a_completed_block() -> None:
    for rounds in range(0, 300):
        levels = {node.level for node in _all_nodes_up_to(rounds)}
        assert levels_used(rounds) == len(levels)


def test_invalid_steps_and_nodes_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        cover_change(0)
    with pytest.raises(ConfigurationError):
        cover(-1)
    with pytest.raises(ConfigurationError):
        TreeNode(0, 0)
