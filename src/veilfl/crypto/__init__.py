"""Field arithmetic, fixed-point encoding, Shamir sharing, CSPRNG streams and HPKE
envelopes. Pure: no I/O."""

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.encoding import FixedPointEncoding
from veilfl.crypto.envelope import (
    KemChoice,
    ShareContext,
    decode_share,
    encode_share,
    open_sealed,
    seal,
)
from veilfl.crypto.field import MERSENNE_31, PrimeField
from veilfl.crypto.keys import AggregatorKeyPair, fingerprint, generate_keypair
from veilfl.crypto.shamir import ShamirScheme, Share, lagrange_coefficients_at_zero, sum_shares

__all__ = [
    "MERSENNE_31",
    "AggregatorKeyPair",
    "CsprngStream",
    "FixedPointEncoding",
    "KemChoice",
    "PrimeField",
    "ShamirScheme",
    "Share",
    "ShareContext",
    "decode_share",
    "encode_share",
    "fingerprint",
    "generate_keypair",
    "lagrange_coefficients_at_zero",
    "open_sealed",
    "seal",
    "sum_shares",
]
