"""Binary-tree bookkeeping for tree aggregation of a stream of round sums.

The tree mechanism (Dwork, Naor, Pitassi and Rothblum 2010; Chan, Shi and Song
2011) releases prefix sums S_t = a_1 + ... + a_t of a stream by noising dyadic
blocks of rounds once and reusing that noise. A node at ``level`` l with ``index``
k >= 1 covers rounds (k - 1) 2^l + 1 .. k 2^l and is complete once round k 2^l has
been summed. The *cover* of [1, t] is its dyadic decomposition: one node per set
bit of t, largest first, so S_t is the sum of at most floor(log2 t) + 1 nodes.

Only nodes with an odd index are ever in a cover (a node with an even index is
always merged with its left sibling before it could be used), so only they need
noise: exactly one per round, :func:`cover_change` ``(t).added``.

Everything here is integer arithmetic on round numbers; no data, no noise.
"""

from __future__ import annotations

from dataclasses import dataclass

from veilfl.errors import ConfigurationError

__all__ = ["CoverChange", "TreeNode", "completed_nodes", "cover", "cover_change", "levels_used"]


@dataclass(frozen=True, order=True)
class TreeNode:
    """The dyadic block of rounds (index - 1) 2^level + 1 .. index 2^level.

    Raises:
        ConfigurationError: for a negative level or an index below 1.
    """

    level: int
    index: int

    def __post_init__(self) -> None:
        if self.level < 0 or self.index < 1:
            raise ConfigurationError(
                f"A tree node needs level >= 0 and index >= 1; got ({self.level}, {self.index})."
            )

    @property
    def first(self) -> int:
        """The first round it covers."""
        return ((self.index - 1) << self.level) + 1

    @property
    def last(self) -> int:
        """The last round it covers: the round it completes at."""
        return self.index << self.level

    def contains(self, step: int) -> bool:
        """Whether round ``step`` is in the block."""
        return self.first <= step <= self.last


def _check_step(step: int, *, allow_zero: bool = False) -> None:
    if isinstance(step, bool) or not isinstance(step, int) or step < (0 if allow_zero else 1):
        raise ConfigurationError(
            f"Tree steps count released rounds from 1; got {step!r}."
            if not allow_zero
            else f"A prefix [1, t] needs t >= 0; got {step!r}."
        )


def _trailing_zeros(step: int) -> int:
    return (step & -step).bit_length() - 1


def completed_nodes(step: int) -> tuple[TreeNode, ...]:
    """Every node whose block ends at round ``step``, lowest level first."""
    _check_step(step)
    return tuple(TreeNode(level, step >> level) for level in range(_trailing_zeros(step) + 1))


def cover(step: int) -> tuple[TreeNode, ...]:
    """The dyadic decomposition of [1, step], highest level (earliest rounds) first;
    empty for step 0."""
    _check_step(step, allow_zero=True)
    nodes = []
    covered = 0
    for level in reversed(range(step.bit_length())):
        if step >> level & 1:
            nodes.append(TreeNode(level, (covered >> level) + 1))
            covered += 2**level
    return tuple(nodes)


@dataclass(frozen=True)
class CoverChange:
    """How the cover changes from [1, step - 1] to [1, step].

    Attributes:
        added: The one node that enters (completed at ``step``, odd index).
        removed: The nodes that leave, merged into ``added``.
    """

    added: TreeNode
    removed: tuple[TreeNode, ...]


def cover_change(step: int) -> CoverChange:
    """The node that enters the cover at ``step`` and those that leave it.

    S_step - S_(step-1) = a_step, and on the noise side the released prefix sum gains
    the added node's noise and loses the removed nodes' noise.
    """
    _check_step(step)
    # step - 1 ends in as many one bits as step ends in zeros: those blocks merge.
    level = _trailing_zeros(step)
    removed = tuple(node for node in cover(step - 1) if node.level < level)
    return CoverChange(added=TreeNode(level, step >> level), removed=removed)


def levels_used(rounds: int) -> int:
    """How many tree levels hold a node that completes within ``rounds`` rounds:
    floor(log2 rounds) + 1 (0 for no rounds)."""
    _check_step(rounds, allow_zero=True)
    return rounds.bit_length()
