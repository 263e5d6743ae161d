"""JSON a hostile peer sends: numbers too large for a float (``1e999`` decodes to
infinity), floats, booleans and out-of-range integers where integers belong. Each
parser answers with its own error, never an OverflowError (a 500 at the HTTP edge)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from veilfl.crypto.keys import generate_keypair
from veilfl.errors import ConfigurationError, WireFormatError
from veilfl.secagg.aggregator_policy import AggregatorPolicy
from veilfl.secagg.commitment import Commitment, CommitmentCertificate
from veilfl.secagg.config import SecureAggregationConfig

KEY = generate_keypair()
PARTICIPANTS = ["a", "b"]


def _certificate() -> dict[str, Any]:
    commitment = Commitment.of("run", 3, PARTICIPANTS)
    return CommitmentCertificate(commitment, {1: KEY.sign(commitment.message())}).to_json()


def _hostile(text: str) -> Any:
    return json.loads(text)  # what a JSON body with this number decodes to


@pytest.mark.parametrize(
    "round_id",
    [
        pytest.param(_hostile("1e999"), id="1e999"),
        pytest.param(_hostile("-1e999"), id="-1e999"),
        pytest.param(3.0, id="float"),
        pytest.param(True, id="bool"),
        pytest.param("3", id="string"),
        pytest.param(-1, id="negative"),
        pytest.param(2**64, id="2^64"),
        pytest.param(None, id="null"),
    ],
)
def test_a_certificate_whose_round_id_is_not_a_64_bit_integer_is_a_wire_format_error(
    round_id: object,
) -> None:
    data = _certificate() | {"round_id": round_id}
    with pytest.raises(WireFormatError, match=r"round_id|does not parse"):
        CommitmentCertificate.from_json(data, run_id="run", participants=PARTICIPANTS)


def test_a_well_formed_certificate_still_parses() -> None:
    parsed = CommitmentCertificate.from_json(
        _certificate(), run_id="run", participants=PARTICIPANTS
    )
    assert parsed.commitment == Commitment.of("run", 3, PARTICIPANTS)


def test_a_certificate_signature_index_of_1e999_is_a_wire_format_error() -> None:
    data = _certificate()
    data["signatures"] = {"1e999": data["signatures"]["1"]}
    with pytest.raises(WireFormatError):
        CommitmentCertificate.from_json(data, run_id="run", participants=PARTICIPANTS)


def test_a_policy_or_secure_settings_with_1e999_is_refused_with_the_parsers_error() -> None:
    policy = {"index": _hostile("1e999"), "fingerprint": "f", "min_participants": 2}
    with pytest.raises(WireFormatError, match="does not parse"):
        AggregatorPolicy.from_json(policy | {"signature": ""})
    settings = SecureAggregationConfig().to_json() | {"threshold": _hostile("1e999")}
    with pytest.raises(ConfigurationError, match="malformed"):
        SecureAggregationConfig.from_json(settings)
