"""Differential-privacy mechanisms behind one interface, chosen by name.

:class:`~veilfl.privacy.mechanisms.base.PrivacyMechanism` is the interface; the
registry (:mod:`veilfl.privacy.mechanisms.registry`) maps ``--dp-mechanism`` names to
mechanisms. The built-in ones are registered here, one line each: adding a mechanism
means its module, its line below, and its tests (docs/privacy.md).
"""

from __future__ import annotations

from veilfl.privacy.mechanisms.banded_mf import BandedMatrixFactorization, BandedOptions
from veilfl.privacy.mechanisms.base import DealtNoisePlan, PrivacyFacts, PrivacyMechanism
from veilfl.privacy.mechanisms.blt_mf import BltMatrixFactorization, BltOptions, BltReleaseSchedule
from veilfl.privacy.mechanisms.fedavg import DpFedAvg
from veilfl.privacy.mechanisms.ftrl_tree import DpFtrlTree
from veilfl.privacy.mechanisms.registry import (
    mechanism_named,
    mechanism_names,
    register_mechanism,
    unregister_mechanism,
)
from veilfl.privacy.mechanisms.schedule import (
    FreshNoiseSchedule,
    ReleaseDecoder,
    ReleaseEncoder,
    ReleaseSchedule,
    ReleaseTerms,
    StatelessDecoder,
    ToeplitzReleaseSchedule,
    TreeNoiseSchedule,
)

__all__ = [
    "BandedMatrixFactorization",
    "BandedOptions",
    "BltMatrixFactorization",
    "BltOptions",
    "BltReleaseSchedule",
    "DealtNoisePlan",
    "DpFedAvg",
    "DpFtrlTree",
    "FreshNoiseSchedule",
    "PrivacyFacts",
    "PrivacyMechanism",
    "ReleaseDecoder",
    "ReleaseEncoder",
    "ReleaseSchedule",
    "ReleaseTerms",
    "StatelessDecoder",
    "ToeplitzReleaseSchedule",
    "TreeNoiseSchedule",
    "mechanism_named",
    "mechanism_names",
    "register_mechanism",
    "unregister_mechanism",
]

register_mechanism(DpFedAvg())
register_mechanism(DpFtrlTree())
register_mechanism(BandedMatrixFactorization())
register_mechanism(BltMatrixFactorization())
