"""A client's side of secure aggregation: encode, share, seal (pure).

The client appends its FedAvg weight ``w`` and its weighted, range-clipped training
loss to ``w · Δ`` (so neither travels in the clear), encodes the vector into the
prime field, splits it into one Shamir share per aggregator and seals share j to
aggregator j's public key with HPKE, binding run, round, client and j.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.envelope import PublicKey, ShareContext, encode_share, seal
from veilfl.errors import ConfigurationError
from veilfl.secagg.config import EXTRA_COORDINATES, LOSS_RANGE, SecureAggregationConfig
from veilfl.tensors import FloatArray

__all__ = ["SealedShare", "seal_update", "secure_vector"]


@dataclass(frozen=True)
class SealedShare:
    """Share ``aggregator_index`` of one client's update, sealed to that aggregator."""

    aggregator_index: int
    envelope: bytes


def secure_vector(delta: FloatArray, *, weight: float, loss: float) -> npt.NDArray[np.float64]:
    """``[w·Δ, w, w·min(loss, LOSS_RANGE)/LOSS_RANGE]``, in float64 so that the only
    rounding is the encoding's."""
    clipped_loss = min(max(loss, 0.0), LOSS_RANGE) / LOSS_RANGE
    vector = np.empty(delta.size + EXTRA_COORDINATES, dtype=np.float64)
    np.multiply(delta, weight, out=vector[: delta.size], dtype=np.float64)
    vector[delta.size :] = (weight, weight * clipped_loss)
    return vector


def seal_update(
    delta: FloatArray,
    *,
    num_samples: int,
    loss: float,
    config: SecureAggregationConfig,
    public_keys: Sequence[PublicKey],
    run_id: str,
    round_id: int,
    client_id: str,
    rng: CsprngStream,
) -> list[SealedShare]:
    """Encode, share and seal one client's flat update, one envelope per aggregator.

    Args:
        delta: The flat model delta (already clipped and noised where DP is on).
        num_samples: Local examples; becomes the FedAvg weight inside the vector.
        loss: Mean local training loss.
        config: Secure-aggregation parameters.
        public_keys: Aggregator j's public key at position j - 1.
        run_id: The run.
        round_id: The round (or buffer) the update is for.
        client_id: The sending client.
        rng: CSPRNG for the sharing polynomials.

    Raises:
        ConfigurationError: if the number of keys is not the number of aggregators.
    """
    if len(public_keys) != config.num_aggregators:
        raise ConfigurationError(
            f"Secure aggregation needs {config.num_aggregators} aggregator keys; "
            f"got {len(public_keys)}."
        )
    vector = secure_vector(delta, weight=config.client_weight(num_samples), loss=loss)
    encoded = config.encoding().encode(vector)
    shares = config.scheme().split(encoded, rng=rng)
    return [
        SealedShare(
            aggregator_index=share.index,
            envelope=seal(
                encode_share(share),
                public_keys[share.index - 1],
                context=ShareContext(
                    run_id=run_id,
                    round_id=round_id,
                    client_id=client_id,
                    aggregator_index=share.index,
                ),
            ),
        )
        for share in shares
    ]
