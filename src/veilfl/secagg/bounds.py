"""Verified bounds on secret-shared contributions: the client proves, t-of-m aggregators
verify on their shares, and the coordinator decides from t or more verifier shares.

This module is the API; the client's side is :mod:`~veilfl.secagg.bounds_prover`, the
verifiers' :mod:`~veilfl.secagg.bounds_verifier`, the public randomness
:mod:`~veilfl.secagg.bounds_transcript`, the settings
:mod:`~veilfl.secagg.bounds_parameters` and the messages
:mod:`~veilfl.secagg.bounds_messages`.

The client's input to the proof system is one vector over GF(p), shared t-of-m
(:mod:`veilfl.crypto.seeded_shares`: aggregators 1..t-1 receive 32-byte seeds)::

    x (d update coordinates) | extras (e) | bits | norm gadget proof | bit gadget proof

The circuit (docs/verified-bounds.md) checks, with every output reduced by verifier
randomness:

* the squared norm Σ x_i^2 (mod p) equals Σ w_i s_i for bits s_i with weights that
  reach exactly [0, B^2] (:func:`~veilfl.secagg.bounds_parameters.range_weights`);
* for each of κ wraparound checks h (PINE, :mod:`veilfl.crypto.wraparound`),
  <z_h, x> + b equals a bit combination in [0, 2b], so <z_h, x> mod p is in [-b, b];
* each extra e_j minus lo_j is its step s_j times a bit combination in
  [0, (hi_j - lo_j) / s_j] (a step of 2 on [-1, 1] leaves exactly -1 and +1);
* for each ordered pair (i, j), e_j - e_i is a bit combination in [0, hi_j - lo_i];
* every bit s satisfies s^2 = s.

Squares are gadget calls of a Fully Linear PCP (:mod:`veilfl.crypto.flp`). The z_h come
from a Fiat-Shamir seed over the update shares (Prio3's joint randomness, draft-irtf-
cfrg-vdaf: part_j = H(binding, j, blind_j, share_j of x), seed = H(binding, parts)), so
aggregators compute their projections when the share arrives (:func:`prepare_share`).
The FLP's query randomness comes from the verifier side afterwards (:func:`verifier_share`):
the client cannot grind it.

Trust: clients may be malicious. Aggregators and the coordinator follow the protocol
(honest but curious, fewer than t colluding): then an invalid contribution is accepted
with probability at most :meth:`BoundsParameters.soundness_error`, and fewer than t
aggregators together with the coordinator learn nothing about an honest contribution but
its validity, provided each aggregator answers one query per contribution.
"""

from veilfl.secagg.bounds_messages import (
    ContributionShare,
    Verdict,
    VerdictReason,
    VerifierShare,
)
from veilfl.secagg.bounds_parameters import BoundsParameters
from veilfl.secagg.bounds_prover import prove_contribution
from veilfl.secagg.bounds_transcript import DOMAIN
from veilfl.secagg.bounds_verifier import (
    PreparedShare,
    decide,
    measurement_share,
    prepare_share,
    restore_prepared,
    verifier_share,
)

__all__ = [
    "DOMAIN",
    "BoundsParameters",
    "ContributionShare",
    "PreparedShare",
    "Verdict",
    "VerdictReason",
    "VerifierShare",
    "decide",
    "measurement_share",
    "prepare_share",
    "prove_contribution",
    "restore_prepared",
    "verifier_share",
]
