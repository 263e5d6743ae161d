"""Noise deals on the wire: HPKE-sealed to the recipient, signed by the dealer.

An aggregator's share of another aggregator's noise (:class:`~veilfl.secagg.tree_noise.
NoiseDeal`) travels dealer -> coordinator -> recipient. The coordinator must neither
read it (with its plaintext and t - 2 more aggregators it would know a dealer's noise),
nor forge it (it would choose the noise), nor drop one deal and put another in its place:

* **Sealed** to the recipient's HPKE key (RFC 9180) with an ``info`` that binds the
  run, the step, the dealer and the recipient under the domain tag
  ``veilfl/noise-deal/v1``, distinct from clients' shares (``veilfl/share/v1``), so a
  deal never opens as a client share, in another run or step, or for another recipient.
* **Signed** with the dealer's Ed25519 key over the domain tag, that ``info`` and the
  ciphertext; the recipient checks the signature against the run's pinned signing keys
  (the ones it checks commitment certificates with) before opening anything.

Wire form: ``b"VFDE"``, the dealer and recipient indices (one byte each), the 64-byte
signature, then the HPKE output.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidTag

from veilfl.crypto.envelope import PrivateKey, PublicKey, suite_for
from veilfl.crypto.keys import verify_aggregator_signature
from veilfl.errors import CryptoError, ProtocolError, WireFormatError
from veilfl.secagg.tree_noise import NoiseDeal, TreeNoiseConfig

__all__ = ["DEAL_DOMAIN", "deal_info", "open_deal", "seal_deal"]

DEAL_DOMAIN = b"veilfl/noise-deal/v1"
"""The domain tag of every noise deal's HPKE ``info`` and signature."""

_MAGIC = b"VFDE"
_HEADER = struct.Struct("<4sBB64s")
_SIGNATURE_TAG = b"veilfl/noise-deal-signature/v1"
_LENGTH_PREFIX = struct.Struct("<I")


def deal_info(*, run_id: str, step: int, dealer: int, recipient: int) -> bytes:
    """The HPKE ``info`` of a deal: the domain tag, then run, step, dealer and recipient,
    each as a u32 length and its bytes (injective)."""
    parts = (
        run_id.encode("utf-8", "surrogatepass"),
        str(step).encode("ascii"),
        str(dealer).encode("ascii"),
        str(recipient).encode("ascii"),
    )
    return DEAL_DOMAIN + b"".join(_LENGTH_PREFIX.pack(len(p)) + p for p in parts)


def _signed_message(info: bytes, ciphertext: bytes) -> bytes:
    return _SIGNATURE_TAG + _LENGTH_PREFIX.pack(len(info)) + info + ciphertext


def seal_deal(
    deal: NoiseDeal,
    *,
    run_id: str,
    step: int,
    public_key: PublicKey,
    sign: Callable[[bytes], bytes],
) -> bytes:
    """Seal ``deal`` to its recipient's ``public_key`` and sign it with the dealer's key.

    Raises:
        CryptoError: if the recipient's public key is unusable.
    """
    info = deal_info(run_id=run_id, step=step, dealer=deal.dealer, recipient=deal.recipient)
    try:
        ciphertext = suite_for(public_key).encrypt(deal.to_bytes(), public_key, info=info)
    except ValueError:
        raise CryptoError(
            f"Cannot seal a noise deal to aggregator {deal.recipient}: its public key is "
            "invalid. Check the run's published keys."
        ) from None
    signature = sign(_signed_message(info, ciphertext))
    return _HEADER.pack(_MAGIC, deal.dealer, deal.recipient, signature) + ciphertext


def open_deal(
    data: bytes,
    *,
    run_id: str,
    step: int,
    recipient: int,
    private_key: PrivateKey,
    signing_keys: Mapping[int, bytes],
    config: TreeNoiseConfig,
) -> NoiseDeal:
    """Check a sealed deal's signature, open it and parse it.

    Args:
        data: :func:`seal_deal` output.
        run_id: This run.
        step: The step the deal must be for.
        recipient: This aggregator's index.
        private_key: This aggregator's HPKE private key.
        signing_keys: Every aggregator's pinned Ed25519 public key, by index.
        config: The run's noise settings.

    Returns:
        The deal, for exactly this run, step, recipient and the block that step adds.

    Raises:
        ProtocolError: for a deal addressed to another aggregator, from an unknown
            dealer, whose signature does not verify (forged or altered), that does not
            open (replayed from another run or step, or re-addressed), or whose content
            names another dealer, recipient or block.
    """
    if len(data) <= _HEADER.size:
        raise ProtocolError("The noise deal is too short to hold its header.")
    magic, dealer, addressed, signature = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise ProtocolError("The data is not a sealed noise deal in this veilfl's format.")
    if addressed != recipient:
        raise ProtocolError(f"This noise deal is for aggregator {addressed}, not {recipient}.")
    key = signing_keys.get(dealer)
    if key is None or dealer == recipient:
        raise ProtocolError(f"Aggregator {dealer} cannot deal noise to {recipient}.")
    ciphertext = data[_HEADER.size :]
    info = deal_info(run_id=run_id, step=step, dealer=dealer, recipient=recipient)
    if not verify_aggregator_signature(key, _signed_message(info, ciphertext), signature):
        raise ProtocolError(
            f"The noise deal from aggregator {dealer} for step {step} does not carry its "
            "signature for this run, step and recipient (forged, altered or replayed); "
            "refusing it."
        )
    try:
        plaintext = suite_for(private_key).decrypt(ciphertext, private_key, info=info)
    except (InvalidTag, ValueError):
        raise ProtocolError(
            f"The noise deal from aggregator {dealer} for step {step} does not open for "
            f"aggregator {recipient}; refusing it."
        ) from None
    try:
        deal = NoiseDeal.from_bytes(plaintext, config=config)
    except WireFormatError as exc:
        raise ProtocolError(f"The noise deal from aggregator {dealer} is malformed: {exc}") from exc
    if deal.dealer != dealer or deal.recipient != recipient or deal.node != config.added(step):
        raise ProtocolError(
            f"The noise deal from aggregator {dealer} names another dealer, recipient or "
            f"block than step {step}'s; refusing it."
        )
    return deal
