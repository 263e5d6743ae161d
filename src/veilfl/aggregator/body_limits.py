"""How large a body the coordinator's requests to an aggregator may have, declared once
per endpoint and derived from the run's encoding.

The coordinator-only JSON endpoints (verify, commit, aggregate, noise-deals) read their
body before the coordinator's signature over it can be checked, and parse it only after
(:func:`~veilfl.transport.body_limit.read_limited_body`). The limit is the largest body
an honest coordinator of this run can send:

* a participant list of at most :attr:`~veilfl.secagg.aggregator_node.AggregatorNode.
  max_participants` client ids (the most the encoding sums without wrapping; longer
  lists are refused anyway), each at most
  :data:`~veilfl.auth.signed_request.MAX_CLIENT_ID_LENGTH` ASCII characters, quoted and
  separated;
* for an aggregate request under distributed DP, one sealed noise deal from each of the
  other m - 1 aggregators, each at most a full share of the measurement (4 bytes per
  coordinate) plus its headers, HPKE encapsulation (at most 1,120 bytes, ML-KEM-768 +
  X25519) and signature, in base64;
* :data:`FIXED_BYTES` for everything else (query seed, step, certificate of at most 16
  signatures, field names).
"""

from __future__ import annotations

from dataclasses import dataclass

from veilfl.auth.signed_request import MAX_CLIENT_ID_LENGTH
from veilfl.secagg.contribution import ContributionLayout

__all__ = ["DEAL_OVERHEAD_BYTES", "FIXED_BYTES", "CoordinatorBodyLimits"]

FIXED_BYTES = 16 * 1024
"""What a coordinator's body holds besides its participant list and noise deals."""
DEAL_OVERHEAD_BYTES = 2048
"""A sealed deal's bytes besides its values: deal header (17), envelope header and
signature (70), HPKE encapsulation (at most 1,120) and tag (16), with room to spare."""
_PER_ID = MAX_CLIENT_ID_LENGTH + 4  # two quotes, a comma and a space


def _base64_length(raw: int) -> int:
    return 4 * -(-raw // 3)


@dataclass(frozen=True)
class CoordinatorBodyLimits:
    """The largest body each coordinator-only endpoint accepts, in bytes.

    Attributes:
        participant_list: ``verify`` and ``commit``: one list of client ids.
        aggregate: ``aggregate``: the list, a certificate and the noise deals.
        noise_deals: ``noise-deals``: a step.
    """

    participant_list: int
    aggregate: int
    noise_deals: int

    @classmethod
    def for_run(cls, layout: ContributionLayout, *, max_participants: int) -> CoordinatorBodyLimits:
        """The limits for a run of ``layout`` whose lists hold at most
        ``max_participants`` clients."""
        participant_list = FIXED_BYTES + max_participants * _PER_ID
        deal = _base64_length(4 * layout.measurement_length + DEAL_OVERHEAD_BYTES) + 4
        deals = (layout.config.num_aggregators - 1) * deal
        return cls(
            participant_list=participant_list,
            aggregate=participant_list + deals,
            noise_deals=FIXED_BYTES,
        )
