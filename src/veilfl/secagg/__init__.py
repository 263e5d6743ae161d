"""veilfl.secagg: secure aggregation as pure state machines.

* :mod:`~veilfl.secagg.bounds`: verified bounds on secret-shared contributions (a
  client proves its norm and ranges; t-of-m aggregators verify on their shares).
"""

from veilfl.secagg.bounds import (
    PreparedShare,
    decide,
    prepare_share,
    prove_contribution,
    verifier_share,
)
from veilfl.secagg.bounds_messages import (
    ContributionShare,
    Verdict,
    VerdictReason,
    VerifierShare,
)
from veilfl.secagg.bounds_parameters import BoundsParameters

__all__ = [
    "BoundsParameters",
    "ContributionShare",
    "PreparedShare",
    "Verdict",
    "VerdictReason",
    "VerifierShare",
    "decide",
    "prepare_share",
    "prove_contribution",
    "verifier_share",
]
