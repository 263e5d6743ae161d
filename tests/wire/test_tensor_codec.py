"""The safetensors codec: round trips, and only documented errors on hostile bytes."""

from __future__ import annotations

import contextlib
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veilfl.errors import UpdateRejectedError, WireFormatError
from veilfl.tensors import spec_of
from veilfl.wire.tensor_codec import decode_weights, encode_weights

_SAMPLE = {
    "layer.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
    "layer.bias": np.array([0.5, -1.0, 2.0], dtype=np.float32),
}


@settings(max_examples=50, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=3), min_size=1, max_size=5),
    seed=st.integers(0, 2**31),
)
def test_round_trip_keeps_names_shapes_values_and_metadata(
    shapes: list[list[int]], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    weights = {f"t{i}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(shapes)}
    decoded, metadata = decode_weights(
        encode_weights(weights, metadata={"k": "v"}), spec=spec_of(weights)
    )
    assert list(decoded) == list(weights)
    for name, array in weights.items():
        np.testing.assert_array_equal(decoded[name], array)
    assert metadata == {"k": "v"}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300))
def test_random_bytes_only_ever_raise_wire_format_error(data: bytes) -> None:
    with pytest.raises(WireFormatError):
        decode_weights(data)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 10_000), value=st.integers(0, 255))
def test_corrupted_payloads_decode_or_raise_only_documented_errors(
    position: int, value: int
) -> None:
    body = bytearray(encode_weights(_SAMPLE))
    body[position % len(body)] = value
    with contextlib.suppress(WireFormatError, UpdateRejectedError):
        decode_weights(bytes(body), spec=spec_of(_SAMPLE))


def _raw(header: dict[str, object], data: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (_raw({"x": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8)), "dtype"),
        (_raw({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)), "bytes"),
        (_raw({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(9)), "trailing"),
        (
            _raw(
                {"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                np.array([np.nan], np.float32).tobytes(),
            ),
            "NaN",
        ),
        (_raw({"__metadata__": {"a": 1}}, b""), "metadata"),
    ],
)
def test_specific_malformations_are_named(body: bytes, words: str) -> None:
    with pytest.raises(WireFormatError, match=words):
        decode_weights(body)


def test_size_limit_is_enforced_before_parsing() -> None:
    with pytest.raises(WireFormatError, match="more than"):
        decode_weights(encode_weights(_SAMPLE), max_bytes=10)


def test_tensors_that_do_not_fit_the_model_are_rejected() -> None:
    other = {"layer.weight": np.zeros((4, 3), np.float32), "layer.bias": np.zeros(3, np.float32)}
    with pytest.raises(UpdateRejectedError, match="shape"):
        decode_weights(encode_weights(other), spec=spec_of(_SAMPLE))
