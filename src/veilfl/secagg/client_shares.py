"""A client's side of secure aggregation: encode, share, seal (pure).

The client appends its FedAvg weight ``w``, its weighted, range-clipped training
loss and (under DP) its "within the clipping norm" bit to ``w · Δ`` (so none of them
travels in the clear), adds its share of distributed DP noise to the encoded
integers when asked, encodes the vector into the
prime field, splits it into one Shamir share per aggregator and seals share j to
aggregator j's public key with HPKE, binding run, round, client and j.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.encoding import FixedPointEncoding
from veilfl.crypto.envelope import PublicKey, ShareContext, encode_share, seal
from veilfl.crypto.field import FieldArray
from veilfl.errors import ConfigurationError
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan
from veilfl.privacy.noise import discrete_gaussian
from veilfl.secagg.config import EXTRA_COORDINATES, LOSS_RANGE, SecureAggregationConfig
from veilfl.tensors import FloatArray

__all__ = ["SealedShare", "add_distributed_noise", "seal_update", "secure_vector"]


@dataclass(frozen=True)
class SealedShare:
    """Share ``aggregator_index`` of one client's update, sealed to that aggregator."""

    aggregator_index: int
    envelope: bytes


def secure_vector(
    delta: npt.NDArray[np.floating], *, weight: float, loss: float, within_bound: bool = False
) -> npt.NDArray[np.float64]:
    """``[w·Δ, w, w·min(loss, LOSS_RANGE)/LOSS_RANGE, within_bound]``, in float64 so
    that the only rounding is the encoding's."""
    clipped_loss = min(max(loss, 0.0), LOSS_RANGE) / LOSS_RANGE
    vector = np.empty(delta.size + EXTRA_COORDINATES, dtype=np.float64)
    np.multiply(delta, weight, out=vector[: delta.size], dtype=np.float64)
    vector[delta.size :] = (weight, weight * clipped_loss, float(within_bound))
    return vector


def add_distributed_noise(
    encoded: FieldArray,
    *,
    plan: ClientPrivacyPlan,
    encoding: FixedPointEncoding,
    rng: CsprngStream,
) -> FieldArray:
    """Add this client's share of the distributed discrete Gaussian, in the field.

    The clipped update's L2 norm in integer units is at most C·scale + √d/2 (rounding
    moves each coordinate by at most 1/2), so the noise is scaled to that sensitivity.
    The weight and loss coordinates get none (under DP the weight is 1 for everyone
    and the loss is not reported); the bit coordinate gets the count noise.
    """
    size = encoded.size - EXTRA_COORDINATES
    sensitivity = plan.clip_norm * encoding.scale + math.sqrt(size) / 2
    noise = np.zeros(encoded.size, dtype=np.int64)
    noise[:size] = discrete_gaussian(
        rng, sigma=plan.update_stddev / plan.clip_norm * sensitivity, count=size
    )
    noise[-1] = discrete_gaussian(rng, sigma=plan.count_stddev * encoding.scale, count=1)[0]
    modulus = np.int64(encoding.field.modulus)
    noised = (encoded.astype(np.int64) + noise) % modulus  # numpy's % is non-negative here
    return noised.astype(np.uint64)


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
    privacy: ClientPrivacyPlan | None = None,
    within_bound: bool = False,
    weight: float | None = None,
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
        rng: CSPRNG for the sharing polynomials and any noise.
        privacy: Under DP, the round's plan: every client weighs 1, the loss is not
            reported, and distributed noise is added to the encoded integers.
        within_bound: Under adaptive clipping, whether the update needed no clipping.
        weight: A weight fixed by the protocol (a buffered update's staleness weight,
            at most 1); by default the sample-count weight, or 1 under DP.

    Raises:
        ConfigurationError: if the number of keys is not the number of aggregators.
    """
    if len(public_keys) != config.num_aggregators:
        raise ConfigurationError(
            f"Secure aggregation needs {config.num_aggregators} aggregator keys; "
            f"got {len(public_keys)}."
        )
    if privacy is None:
        chosen = config.client_weight(num_samples) if weight is None else weight
        vector = secure_vector(delta, weight=chosen, loss=loss)
    else:
        chosen = 1.0 if weight is None else weight
        vector = secure_vector(delta, weight=chosen, loss=0.0, within_bound=within_bound)
    encoding = config.encoding()
    encoded = encoding.encode(vector)
    if privacy is not None and privacy.placement == "distributed":
        encoded = add_distributed_noise(encoded, plan=privacy, encoding=encoding, rng=rng)
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
