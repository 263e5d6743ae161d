"""Noise deals on the wire: only the recipient opens them, only for their run and step,
and only with the dealer's signature; a coordinator can neither forge, alter,
replay nor re-address one."""

from __future__ import annotations

import pytest

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.keys import AggregatorKeyPair, generate_keypair
from veilfl.errors import ProtocolError
from veilfl.secagg.noise_envelope import open_deal, seal_deal
from veilfl.secagg.tree_noise import NoiseDeal, TreeNoiseAggregator, TreeNoiseConfig

CONFIG = TreeNoiseConfig(
    num_aggregators=3, threshold=2, length=6, block_stddev=20.0, schedule="fresh"
)
KEYS = [generate_keypair() for _ in range(3)]
SIGNING = {j: k.signing_public_bytes for j, k in enumerate(KEYS, start=1)}


def _deals(step: int) -> list[NoiseDeal]:
    dealer = TreeNoiseAggregator(CONFIG, index=1, rng=CsprngStream(key=b"d" * 32))
    return dealer.deal(step)


def _seal(
    deal: NoiseDeal, *, step: int, run_id: str = "run", signer: AggregatorKeyPair | None = None
) -> bytes:
    return seal_deal(
        deal,
        run_id=run_id,
        step=step,
        public_key=KEYS[deal.recipient - 1].public_key,
        sign=(signer or KEYS[deal.dealer - 1]).sign,
    )


def _open(data: bytes, *, recipient: int, step: int = 4, run_id: str = "run") -> NoiseDeal:
    return open_deal(
        data,
        run_id=run_id,
        step=step,
        recipient=recipient,
        private_key=KEYS[recipient - 1].private_key,
        signing_keys=SIGNING,
        config=CONFIG,
    )


def test_the_recipient_opens_its_deal() -> None:
    for deal in _deals(4):
        opened = _open(_seal(deal, step=4), recipient=deal.recipient)
        assert opened.to_bytes() == deal.to_bytes()


def test_a_forged_or_altered_deal_is_refused() -> None:
    deal = _deals(4)[0]
    forged = _seal(deal, step=4, signer=KEYS[2])  # the coordinator cannot sign as 1
    with pytest.raises(ProtocolError, match="signature"):
        _open(forged, recipient=deal.recipient)
    sealed = bytearray(_seal(deal, step=4))
    sealed[-1] ^= 1
    with pytest.raises(ProtocolError, match="signature"):
        _open(bytes(sealed), recipient=deal.recipient)


def test_a_replayed_deal_is_refused() -> None:
    deal = _deals(4)[0]
    sealed = _seal(deal, step=4)
    with pytest.raises(ProtocolError, match="signature"):
        _open(sealed, recipient=deal.recipient, step=5)  # another step
    with pytest.raises(ProtocolError, match="signature"):
        _open(sealed, recipient=deal.recipient, run_id="other")  # another run


def test_a_readdressed_deal_is_refused() -> None:
    deal = _deals(4)[0]
    other = next(j for j in (2, 3) if j != deal.recipient)
    sealed = bytearray(_seal(deal, step=4))
    with pytest.raises(ProtocolError, match=f"for aggregator {deal.recipient}"):
        _open(bytes(sealed), recipient=other)
    sealed[5] = other  # rewrite the header's recipient: the signature no longer holds
    with pytest.raises(ProtocolError, match="signature"):
        _open(bytes(sealed), recipient=other)


def test_a_deal_for_another_block_is_refused_even_when_signed() -> None:
    deal = _deals(5)[0]  # block (0, 5), sealed and signed as if for step 4
    with pytest.raises(ProtocolError, match="another dealer, recipient or block"):
        _open(_seal(deal, step=4), recipient=deal.recipient)
