"""Parameters of secure aggregation, shared by clients, aggregators and the coordinator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from veilfl.crypto.encoding import FixedPointEncoding
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.shamir import ShamirScheme
from veilfl.errors import ConfigurationError

__all__ = ["EXTRA_COORDINATES", "LOSS_RANGE", "SecureAggregationConfig"]

#: Coordinates appended to the model delta inside the shared vector, in this order:
#: the FedAvg weight, the weighted training loss (scaled by 1/LOSS_RANGE) and, under
#: adaptive DP clipping, the bit "this update was within the clipping norm". None of
#: them is ever sent in the clear.
EXTRA_COORDINATES = 3
#: Losses are clipped to [0, LOSS_RANGE] and divided by it before sharing.
LOSS_RANGE = 16.0


@dataclass(frozen=True)
class SecureAggregationConfig:
    """How updates are encoded and shared.

    Attributes:
        threshold: t, the aggregate shares needed to reconstruct (and the smallest
            coalition of aggregators that could learn anything).
        num_aggregators: m, one share per aggregator; up to m - t may fail.
        clip_range: Every coordinate of a weighted update is clipped to
            [-clip_range, clip_range] before encoding.
        max_clients: Most updates ever summed in one aggregate; with ``clip_range``
            it fixes the fixed-point scale so the field sum never wraps.
        max_samples_per_client: A client's FedAvg weight is
            ``min(1, num_samples / max_samples_per_client)``.
        kem: HPKE key-encapsulation mechanism of the aggregators' keys.
    """

    threshold: int = 2
    num_aggregators: int = 3
    clip_range: float = 1.0
    max_clients: int = 1000
    max_samples_per_client: int = 10_000
    kem: Literal["x25519", "mlkem768-x25519"] = "x25519"

    def __post_init__(self) -> None:
        if not 1 <= self.threshold <= self.num_aggregators <= 16:
            raise ConfigurationError(
                f"Secure aggregation needs 1 <= threshold <= aggregators <= 16; got threshold "
                f"{self.threshold} with {self.num_aggregators} aggregators."
            )
        if self.max_samples_per_client < 1:
            raise ConfigurationError("max_samples_per_client must be at least 1.")
        self.encoding()  # raises ConfigurationError if the scale would be below 1

    def encoding(self) -> FixedPointEncoding:
        """The fixed-point encoding into the field."""
        return FixedPointEncoding(
            field=MERSENNE_31, clip_range=self.clip_range, max_summands=self.max_clients
        )

    def scheme(self) -> ShamirScheme:
        """The t-of-m Shamir scheme."""
        return ShamirScheme(
            threshold=self.threshold, num_shares=self.num_aggregators, field=MERSENNE_31
        )

    def client_weight(self, num_samples: int) -> float:
        """The FedAvg weight a client with ``num_samples`` examples puts in its vector."""
        return min(1.0, num_samples / self.max_samples_per_client)

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
                clip_range=float(data["clip_range"]),
                max_clients=int(data["max_clients"]),
                max_samples_per_client=int(data["max_samples_per_client"]),
                kem=kem,  # type: ignore[arg-type]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"The secure-aggregation settings are malformed: {exc}."
            ) from exc

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "threshold": self.threshold,
            "num_aggregators": self.num_aggregators,
            "clip_range": self.clip_range,
            "max_clients": self.max_clients,
            "max_samples_per_client": self.max_samples_per_client,
            "kem": self.kem,
        }
