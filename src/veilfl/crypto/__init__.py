"""The cryptographic core of veilfl: pure, synchronous, no I/O.

* :mod:`~veilfl.crypto.field`: vectorised arithmetic in GF(p), p < 2**31.
* :mod:`~veilfl.crypto.csprng`: an AES-256-CTR stream keyed from the OS CSPRNG.
* :mod:`~veilfl.crypto.shamir`: t-of-m Shamir sharing of field vectors (Shamir 1979).
* :mod:`~veilfl.crypto.envelope`: the binary share format and HPKE (RFC 9180) envelopes.
* :mod:`~veilfl.crypto.keys`: aggregator key pairs and fingerprints (files live in
  :mod:`veilfl.keyfiles`).
* :mod:`~veilfl.crypto.field_ext`: GF(p^2), where proof verifiers draw query points.
* :mod:`~veilfl.crypto.seeded_shares`: Shamir sharing with t - 1 shares sent as seeds.
* :mod:`~veilfl.crypto.flp`: a Fully Linear PCP for square gadgets (BBCGGI19).
* :mod:`~veilfl.crypto.wraparound`: PINE's wraparound checks and Lemma W.
* :mod:`~veilfl.crypto.kernels`: compiled (numba) hot loops with exact numpy twins.
"""

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.envelope import (
    KemChoice,
    PrivateKey,
    PublicKey,
    ShareContext,
    decode_share,
    encode_share,
    open_sealed,
    seal,
)
from veilfl.crypto.field import MERSENNE_31, FieldArray, PrimeField
from veilfl.crypto.field_ext import MERSENNE_31_EXT, ExtArray, QuadraticExtension
from veilfl.crypto.keys import (
    AggregatorKeyPair,
    fingerprint,
    generate_keypair,
    load_private_key,
    load_public_key,
    public_key_bytes,
)
from veilfl.crypto.seeded_shares import SeededShare, SeededSharing
from veilfl.crypto.shamir import (
    MAX_SHARES,
    ShamirScheme,
    Share,
    add_shares,
    lagrange_coefficients_at_zero,
    sum_shares,
)
from veilfl.crypto.wraparound import WraparoundChecks

__all__ = [
    "MAX_SHARES",
    "MERSENNE_31",
    "MERSENNE_31_EXT",
    "AggregatorKeyPair",
    "CsprngStream",
    "ExtArray",
    "FieldArray",
    "KemChoice",
    "PrimeField",
    "PrivateKey",
    "PublicKey",
    "QuadraticExtension",
    "SeededShare",
    "SeededSharing",
    "ShamirScheme",
    "Share",
    "ShareContext",
    "WraparoundChecks",
    "add_shares",
    "decode_share",
    "encode_share",
    "fingerprint",
    "generate_keypair",
    "lagrange_coefficients_at_zero",
    "load_private_key",
    "load_public_key",
    "open_sealed",
    "public_key_bytes",
    "seal",
    "sum_shares",
]
