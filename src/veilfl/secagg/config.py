"""Parameters of secure aggregation, shared by clients, aggregators and the coordinator."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.shamir import ShamirScheme
from veilfl.declared import check_declared, setting
from veilfl.errors import ConfigurationError
from veilfl.secagg.commitment import certificates_can_split, default_quorum

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
        quorum: q, the aggregators whose signatures certify a round's participant list
            (an aggregator releases its sum only against such a certificate). Left at
            0, it becomes ``ceil((m + t) / 2)``, the least q with ``2q - m >= t``: any
            two certificates then share t signers, one of them honest even if t - 1
            aggregators collude with the coordinator, so at most one list per round is
            ever summed (:mod:`veilfl.secagg.commitment`). A round then needs q live
            aggregators, not only t. After construction it holds the value in force.
        allow_split_certificates: Accept a quorum with ``2q - m < t`` (refused
            otherwise): the coordinator and t - 1 colluding aggregators could then
            certify two lists of one round and learn one client's update.
    """

    threshold: int = setting(default=2, flag="--threshold", help="shares needed (t)")
    num_aggregators: int = setting(
        default=3, flag=None, help="aggregators (m)", shown_as="--aggregator (count)"
    )
    norm_bound: float = setting(
        default=1.0,
        flag="--norm-bound",
        help="L2 norm each client's weighted update is clipped to, and proves in zero "
        "knowledge (default 10, or the DP clipping norm)",
        cli_default=None,
    )
    max_samples_per_client: int = setting(
        default=10_000,
        flag="--max-samples-per-client",
        help="sample count that gets the full FedAvg weight",
    )
    kem: Literal["x25519", "mlkem768-x25519"] = setting(
        default="x25519",
        flag=None,
        help="the aggregators' key type",
        shown_as="--aggregator key type",
    )
    wraparound_checks: int = setting(
        default=136, flag=None, help="wraparound checks per contribution", at_least=1
    )
    quorum: int = setting(
        default=0,
        flag="--quorum",
        help="aggregators whose signatures certify a round's participant list (default "
        "ceil((m + t) / 2): then t - 1 colluding aggregators cannot help the coordinator "
        "certify a second list; a round needs Q live aggregators)",
        metavar="Q",
        cli_default=None,
    )
    allow_split_certificates: bool = setting(
        default=False,
        flag="--allow-split-certificates",
        help="UNSAFE: accept a --quorum Q with 2Q - m < t, with which the coordinator and "
        "t - 1 colluding aggregators can certify two participant lists of one round and "
        "learn one client's update from their difference",
    )

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
        self._check_quorum()
        check_declared(self)

    def _check_quorum(self) -> None:
        """Resolve the default quorum, then refuse one out of range or one that lets
        two certificates of a round be split (unless explicitly allowed)."""
        m, t = self.num_aggregators, self.threshold
        if self.quorum == 0:
            object.__setattr__(self, "quorum", default_quorum(num_aggregators=m, threshold=t))
        q = self.quorum
        if not 1 <= q <= m:
            raise ConfigurationError(
                f"--quorum must be between 1 and the {m} aggregators; got {q}."
            )
        if not self.allow_split_certificates and certificates_can_split(
            quorum=q, num_aggregators=m, threshold=t
        ):
            who = (
                "the coordinator alone"
                if t == 1
                else f"the coordinator with {t - 1} colluding aggregator(s)"
            )
            raise ConfigurationError(
                f"--quorum {q} with {m} aggregators and threshold {t} lets two certificates "
                f"share only {max(2 * q - m, 0)} signer(s), so {who} could certify two "
                "participant lists of one round and learn one client's update; use --quorum "
                f"{default_quorum(num_aggregators=m, threshold=t)} or more, or accept that risk "
                "with --allow-split-certificates."
            )

    @property
    def certificates_can_split(self) -> bool:
        """Whether two certificates of one round can share fewer than t signers
        (possible only with :attr:`allow_split_certificates`)."""
        return certificates_can_split(
            quorum=self.quorum, num_aggregators=self.num_aggregators, threshold=self.threshold
        )

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
            "quorum": self.quorum,
            "allow_split_certificates": self.allow_split_certificates,
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
                quorum=int(data["quorum"]),
                allow_split_certificates=_flag(data.get("allow_split_certificates", False)),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ConfigurationError(
                f"The secure-aggregation settings are malformed: {exc}."
            ) from exc


def _flag(value: Any) -> bool:
    """A JSON boolean, strictly (``"false"`` is not false)."""
    if not isinstance(value, bool):
        raise ValueError(f"allow_split_certificates must be true or false, not {value!r}")
    return value
