"""Parameters of secure aggregation, shared by clients, aggregators and the coordinator."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.shamir import ShamirScheme
from veilfl.errors import ConfigurationError

__all__ = ["SecureAggregationConfig"]


@dataclass(frozen=True)
class SecureAggregationConfig:
    """How updates are encoded, proven, shared and sealed.

    Attributes:
        threshold: t, the aggregate shares needed to reconstruct (and the smallest
            coalition of aggregators that could learn anything).
        num_aggregators: m, one share per aggregator; up to m - t may fail.
        norm_bound: The L2 norm every client's weighted update ``w·Δ`` is clipped to
            (under DP, the clipping norm C). Each client proves, without revealing its
            update, that the norm of what it shares is within it
            (:mod:`veilfl.secagg.contribution`).
        max_samples_per_client: A client's FedAvg weight is
            ``min(1, num_samples / max_samples_per_client)``.
        kem: HPKE key-encapsulation mechanism of the aggregators' keys.
        wraparound_checks: κ, PINE-style wraparound checks per contribution; more
            checks allow a larger (more precise) integer norm bound and cost linearly.
    """

    threshold: int = 2
    num_aggregators: int = 3
    norm_bound: float = 1.0
    max_samples_per_client: int = 10_000
    kem: Literal["x25519", "mlkem768-x25519"] = "x25519"
    wraparound_checks: int = 136

    def __post_init__(self) -> None:
        if not 1 <= self.threshold <= self.num_aggregators <= 16:
            raise ConfigurationError(
                f"Secure aggregation needs 1 <= threshold <= aggregators <= 16; got threshold "
                f"{self.threshold} with {self.num_aggregators} aggregators."
            )
        if self.max_samples_per_client < 1:
            raise ConfigurationError("--max-samples-per-client must be at least 1.")
        if not (self.norm_bound > 0 and math.isfinite(self.norm_bound)):
            raise ConfigurationError(
                f"--norm-bound must be a positive number; got {self.norm_bound}."
            )
        if self.wraparound_checks < 1:
            raise ConfigurationError("wraparound_checks must be at least 1.")

    def scheme(self) -> ShamirScheme:
        """The t-of-m Shamir scheme."""
        return ShamirScheme(
            threshold=self.threshold, num_shares=self.num_aggregators, field=MERSENNE_31
        )

    def client_weight(self, num_samples: int) -> float:
        """The FedAvg weight a client with ``num_samples`` examples puts in its vector."""
        return min(1.0, num_samples / self.max_samples_per_client)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "threshold": self.threshold,
            "num_aggregators": self.num_aggregators,
            "norm_bound": self.norm_bound,
            "max_samples_per_client": self.max_samples_per_client,
            "kem": self.kem,
            "wraparound_checks": self.wraparound_checks,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SecureAggregationConfig:
        """Parse :meth:`to_json` output.

        Raises:
            ConfigurationError: if a field is missing or out of range.
        """
        try:
            kem = str(data.get("kem", "x25519"))
            if kem not in ("x25519", "mlkem768-x25519"):
                raise ConfigurationError(f"Unknown key type {kem!r}.")
            return cls(
                threshold=int(data["threshold"]),
                num_aggregators=int(data["num_aggregators"]),
                norm_bound=float(data["norm_bound"]),
                max_samples_per_client=int(data["max_samples_per_client"]),
                kem=kem,  # type: ignore[arg-type]
                wraparound_checks=int(data.get("wraparound_checks", 136)),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ConfigurationError(
                f"The secure-aggregation settings are malformed: {exc}."
            ) from exc
