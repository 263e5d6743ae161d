"""Shared pieces of the secure-aggregation benchmarks (not a benchmark itself).

* :class:`PartTimer` attributes the time of a real code path to its parts, by wrapping
  named functions with timers for the duration of a measurement (the code measured is
  the project's own, unchanged; only the clock is added around leaf calls);
* :class:`NoProofBaseline` is the secure pipeline as it was before verified bounds
  (issue 12), rebuilt from today's primitives: encode, plain t-of-m Shamir (m full
  shares), HPKE per share; open, range check, add. It is the "no proof" column that the
  verified pipeline is compared with in the same run;
* :func:`interleaved` runs several actions once per repetition, in turn, so a change of
  machine load hits every side of a ratio alike, and returns medians.
"""

from __future__ import annotations

import contextlib
import inspect
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.envelope import (
    PrivateKey,
    PublicKey,
    ShareContext,
    decode_share,
    encode_share,
    open_sealed,
    seal,
)
from veilfl.crypto.field import MERSENNE_31, FieldArray
from veilfl.crypto.shamir import Share
from veilfl.secagg.contribution import ContributionLayout

__all__ = ["NoProofBaseline", "PartTimer", "interleaved", "medians"]


class PartTimer:
    """Adds up the seconds spent in chosen functions, by part name.

    ``watch(owner, name, part)`` replaces ``owner.name`` (a module function, a method or
    a classmethod) with a timed wrapper while :meth:`timing` is active. Watched functions
    must not call one another (their times would be counted twice).
    """

    def __init__(self) -> None:
        self._watched: list[tuple[Any, str, str]] = []
        self.seconds: dict[str, float] = defaultdict(float)

    def watch(self, owner: Any, name: str, part: str) -> None:
        """Attribute the time spent in ``owner.name`` to ``part``."""
        self._watched.append((owner, name, part))

    @contextlib.contextmanager
    def timing(self) -> Iterator[dict[str, float]]:
        """Install the timers; yield this measurement's seconds by part."""
        seconds: dict[str, float] = defaultdict(float)
        saved = []
        for owner, name, part in self._watched:
            static = inspect.getattr_static(owner, name)
            original = getattr(owner, name)
            saved.append((owner, name, static))
            wrapper = _timed(original, part, seconds)
            unbound = inspect.isclass(owner) and isinstance(static, staticmethod | classmethod)
            setattr(owner, name, staticmethod(wrapper) if unbound else wrapper)
        try:
            yield seconds
        finally:
            for owner, name, static in reversed(saved):
                setattr(owner, name, static)
            for part, value in seconds.items():
                self.seconds[part] += value


def _timed(
    original: Callable[..., Any], part: str, seconds: dict[str, float]
) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds[part] += time.perf_counter() - started

    return wrapper


def interleaved(
    actions: Mapping[str, Callable[[], object]], repeats: int, *, warm_up: bool = True
) -> dict[str, list[float]]:
    """Seconds of each action per repetition, running every action once per repetition
    in turn (after one warm-up call each: first-touch page faults are not protocol cost)."""
    if warm_up:
        for action in actions.values():
            action()
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeats):
        for name, action in actions.items():
            started = time.perf_counter()
            action()
            times[name].append(time.perf_counter() - started)
    return times


def medians(samples: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """The median of each list."""
    return {name: statistics.median(values) for name, values in samples.items()}


class NoProofBaseline:
    """The secure pipeline without verified bounds (before issue 12), on today's
    primitives: the same encoding, plain t-of-m Shamir with m full shares, one HPKE
    envelope per share; an aggregator opens, parses and range-checks
    (:func:`~veilfl.crypto.envelope.decode_share`) and adds.

    Args:
        layout: The encoding (shared with the verified pipeline, so both encode alike).
        public_keys: The aggregators' HPKE keys, index order.
    """

    def __init__(self, layout: ContributionLayout, public_keys: Sequence[PublicKey]) -> None:
        self.layout = layout
        self._public_keys = list(public_keys)
        self._scheme = layout.config.scheme()

    def share(self, measurement: npt.NDArray[np.int64], *, rng: CsprngStream) -> list[Share]:
        """Plain Shamir shares of the measurement (m full shares)."""
        elements = measurement.copy()
        elements[elements < 0] += MERSENNE_31.modulus
        return self._scheme.split(elements.astype(np.uint64), rng=rng)

    def seal(
        self, shares: Sequence[Share], *, run_id: str, round_id: int, client_id: str
    ) -> list[bytes]:
        """One envelope per share, bound like the verified pipeline's."""
        return [
            seal(
                encode_share(share),
                self._public_keys[share.index - 1],
                context=ShareContext(
                    run_id=run_id,
                    round_id=round_id,
                    client_id=client_id,
                    aggregator_index=share.index,
                ),
            )
            for share in shares
        ]

    def open(
        self,
        envelope: bytes,
        private_key: PrivateKey,
        *,
        index: int,
        run_id: str,
        round_id: int,
        client_id: str,
    ) -> bytes:
        """An aggregator opens its envelope."""
        context = ShareContext(
            run_id=run_id, round_id=round_id, client_id=client_id, aggregator_index=index
        )
        return open_sealed(envelope, private_key, context=context)

    def check(self, payload: bytes) -> FieldArray:
        """Parse and range-check an opened share (every value below p)."""
        share = decode_share(
            payload, expected_length=self.layout.measurement_length, field=MERSENNE_31
        )
        return share.values

    def reconstruct(self, sums: Sequence[Share]) -> FieldArray:
        """The field sum from t aggregate shares (each reduced mod p)."""
        return self._scheme.reconstruct(list(sums))
