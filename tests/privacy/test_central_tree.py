"""Central DP-FTRL noise: the released changes telescope to exactly the cover's noise,
each block is the same whenever it is drawn again (after a restart too), and its
spread is z·C."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from veilfl.errors import ConfigurationError
from veilfl.privacy.central_tree import CentralTreeNoise
from veilfl.privacy.tree import TreeNode, cover

KEY = bytes(range(32))


@given(steps=st.integers(1, 40), length=st.integers(1, 5))
def test_the_changes_add_up_to_the_covers_noise(steps: int, length: int) -> None:
    noise = CentralTreeNoise(key=KEY, stddev=2.0, length=length)
    running = np.zeros(length)
    for step in range(1, steps + 1):
        running += noise.change(step)
        # Oracle: the sum of the blocks of the dyadic cover, one at a time.
        expected = sum((noise.block(node) for node in cover(step)), np.zeros(length))
        np.testing.assert_allclose(running, expected, atol=1e-9)


def test_blocks_are_reproducible_from_the_secret_and_distinct() -> None:
    again = CentralTreeNoise(key=KEY, stddev=1.0, length=4)
    noise = CentralTreeNoise(key=KEY, stddev=1.0, length=4)
    other = CentralTreeNoise(key=bytes(32), stddev=1.0, length=4)
    node = TreeNode(2, 1)
    np.testing.assert_array_equal(noise.block(node), again.block(node))
    assert not np.array_equal(noise.block(node), noise.block(TreeNode(0, 1)))
    assert not np.array_equal(noise.block(node), other.block(node))
    assert "00010203" not in repr(noise)


def test_each_block_has_the_charged_spread() -> None:
    noise = CentralTreeNoise(key=KEY, stddev=3.0, length=20_000)
    assert np.std(noise.block(TreeNode(0, 1))) == pytest.approx(3.0, rel=0.03)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="32 bytes"):
        CentralTreeNoise(key=b"short", stddev=1.0, length=1)
