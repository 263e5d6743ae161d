"""The safetensors codec: round trips, and only documented errors on hostile bytes.

The oracle is safetensors itself: whatever our strict decoder accepts, the reference
loader must accept too and read the same arrays.
"""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load

from veilfl.errors import UpdateRejectedError, WireFormatError
from veilfl.tensors import TensorSpec, Weights, spec_of
from veilfl.wire.tensor_codec import ORDER_KEY, decode_weights, encode_weights

# Deliberately not in alphabetical order: safetensors sorts by name on disk.
_SAMPLE: Weights = {
    "layer.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
    "layer.bias": np.array([0.5, -1.0, 2.0], dtype=np.float32),
    "a.scale": np.array(3.0, dtype=np.float32),
}
_DOCUMENTED = (WireFormatError, UpdateRejectedError)

_names = st.text(min_size=1, max_size=8).filter(lambda n: n != "__metadata__")
_metadata = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k != ORDER_KEY), st.text(max_size=8), max_size=4
)
_shapes = st.lists(st.integers(0, 4), max_size=3).map(tuple)


def _raw(header: dict[str, object] | bytes, data: bytes = b"") -> bytes:
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def _f32(
    name: str = "x", shape: list[int] | None = None, offsets: list[int] | None = None
) -> bytes:
    shape = [1] if shape is None else shape
    offsets = [0, 4] if offsets is None else offsets
    return _raw({name: {"dtype": "F32", "shape": shape, "data_offsets": offsets}}, bytes(4))


def _decode_or_documented_error(data: bytes, spec: TensorSpec | None = None) -> None:
    """Decode; if that succeeds, the reference loader must agree on every array."""
    try:
        weights, _ = decode_weights(data, spec=spec)
    except _DOCUMENTED:
        return
    reference = load(data)
    assert set(reference) == set(weights)
    for name, array in weights.items():
        np.testing.assert_array_equal(array, reference[name])


# --- round trips -----------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(_shapes, min_size=0, max_size=5),
    names=st.lists(_names, min_size=5, max_size=5, unique=True),
    metadata=_metadata,
    seed=st.integers(0, 2**31),
)
def test_round_trip_keeps_names_order_shapes_values_and_metadata(
    shapes: list[tuple[int, ...]], names: list[str], metadata: dict[str, str], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    weights = {
        n: rng.normal(size=s).astype(np.float32) for n, s in zip(names, shapes, strict=False)
    }

    decoded, decoded_metadata = decode_weights(encode_weights(weights, metadata=metadata))

    assert list(decoded) == list(weights)
    for name, array in weights.items():
        assert decoded[name].dtype == np.float32
        assert decoded[name].shape == array.shape
        np.testing.assert_array_equal(decoded[name], array)
    assert decoded_metadata == metadata


def test_order_survives_even_though_safetensors_sorts_by_name() -> None:
    body = encode_weights(_SAMPLE)

    decoded, metadata = decode_weights(body)

    (length,) = struct.unpack("<Q", body[:8])
    header = json.loads(body[8 : 8 + length])
    on_disk = sorted(_SAMPLE, key=lambda name: header[name]["data_offsets"][0])
    assert on_disk != list(_SAMPLE)  # the premise: safetensors stores them sorted by name
    assert list(decoded) == ["layer.weight", "layer.bias", "a.scale"]
    assert ORDER_KEY not in metadata


def test_spec_order_wins_over_encoded_order() -> None:
    spec = TensorSpec(names=("a.scale", "layer.bias", "layer.weight"), shapes=((), (3,), (3, 4)))

    decoded, _ = decode_weights(encode_weights(_SAMPLE), spec=spec)

    assert list(decoded) == list(spec.names)


def test_files_without_the_order_key_decode_in_offset_order() -> None:
    from safetensors.numpy import save

    body = save({"b": np.ones(2, np.float32), "a": np.zeros(1, np.float32)})

    decoded, metadata = decode_weights(body)

    assert list(decoded) == ["a", "b"] and metadata == {}


def test_decoded_arrays_are_writable_copies() -> None:
    decoded, _ = decode_weights(encode_weights(_SAMPLE))

    decoded["layer.bias"][0] = 42.0

    assert decoded["layer.bias"].flags.writeable and decoded["layer.bias"].flags.owndata


def test_other_float_dtypes_are_encoded_as_float32() -> None:
    decoded, _ = decode_weights(encode_weights({"x": np.array([1.5, 2.0], dtype=np.float64)}))

    assert decoded["x"].dtype == np.float32


def test_no_tensors_round_trip() -> None:
    assert decode_weights(encode_weights({}, metadata={"k": "v"})) == ({}, {"k": "v"})


# --- hostile bytes ---------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300))
def test_random_bytes_only_ever_raise_wire_format_error(data: bytes) -> None:
    with pytest.raises(WireFormatError):
        decode_weights(data)


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 10_000)),
    use_spec=st.booleans(),
)
def test_mutated_payloads_decode_identically_to_safetensors_or_raise_documented_errors(
    edits: list[tuple[int, int]], cut: int | None, use_spec: bool
) -> None:
    body = bytearray(encode_weights(_SAMPLE, metadata={"round": "3"}))
    for position, value in edits:
        body[position % len(body)] = value
    if cut is not None:
        body = body[: cut % (len(body) + 1)]

    _decode_or_documented_error(bytes(body), spec_of(_SAMPLE) if use_spec else None)


_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["F32", "F64", "I32", "BF16", "F16"]),
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets", "x"]), children)
    ),
    max_leaves=8,
)
_entries = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F32", "F64", "U8"]) | _json_values,
        "shape": st.lists(st.integers(-1, 5), max_size=3) | _json_values,
        "data_offsets": st.lists(st.integers(-1, 64), min_size=2, max_size=2) | _json_values,
    }
)


@settings(max_examples=300, deadline=None)
@given(
    header=st.dictionaries(
        st.sampled_from(["a", "b", "c", "__metadata__"]), _entries | _json_values, max_size=3
    ),
    data=st.binary(max_size=64),
)
def test_structured_hostile_headers_decode_like_safetensors_or_raise_documented_errors(
    header: dict[str, object], data: bytes
) -> None:
    _decode_or_documented_error(_raw(header, data))


_field_values = st.one_of(
    st.integers(-1, 80),
    st.sampled_from(["F32", "F64", "I32", "U8", None, True, "", "x"]),
    st.lists(st.integers(-1, 80), max_size=3),
)


@st.composite
def _header_mutations(draw: st.DrawFn) -> bytes:
    """A valid payload whose header fields were changed, and its data cut or padded."""
    body = encode_weights(_SAMPLE, metadata={"round": "3"})
    (length,) = struct.unpack("<Q", body[:8])
    header = json.loads(body[8 : 8 + length])
    data = body[8 + length :]
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(sorted(header)))
        if name == "__metadata__":
            key = draw(st.sampled_from(["round", ORDER_KEY]))
            header[name][key] = draw(
                st.sampled_from(['["a.scale"]', "[]", "3", json.dumps(sorted(_SAMPLE))])
            )
            continue
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra"]))
        if draw(st.booleans()) and field in header[name]:
            del header[name][field]
        elif field == "data_offsets" or field == "shape":
            values: list[int] = list(header[name].get(field, [0, 0]))
            nudge = draw(st.booleans())
            if values and nudge:
                values[draw(st.integers(0, len(values) - 1))] += draw(st.integers(-8, 8))
            else:
                values = draw(st.lists(st.integers(-1, 80), max_size=3))
            header[name][field] = values
        else:
            header[name][field] = draw(_field_values)
    if draw(st.booleans()):
        data = data[: draw(st.integers(len(data) - 8, len(data)))] + bytes(draw(st.integers(0, 8)))
    return _raw(header, data)


@settings(max_examples=300, deadline=None)
@given(body=_header_mutations())
def test_mutated_headers_decode_identically_to_safetensors_or_raise_documented_errors(
    body: bytes,
) -> None:
    _decode_or_documented_error(body)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "too short"),
        (struct.pack("<Q", 2**63) + b"{}", "claims"),
        (struct.pack("<Q", 100) + b"{}", "shorter"),
        (_raw(b" {}"), "start with"),
        (_raw(b"[]"), "start with"),
        (_raw(b"{\xff}"), "not valid JSON"),
        (_raw(b'{"a": NaN}'), "NaN"),
        (_raw(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "not valid JSON"),
        (
            _raw(b'{"x":{"dtype":"F32","shape":[' + b"1" * 5000 + b'],"data_offsets":[0,4]}}'),
            "not valid JSON",
        ),
        (_raw(b'{"x":{},"x":{}}'), "repeats"),
        (
            _raw(b'{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4)),
            "Unicode",
        ),
        (_raw({"x": [1]}), "exactly the keys"),
        (_raw({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "y": 1}}), "exactly"),
        (_raw({"x": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8)), "dtype"),
        (_f32(shape=[-1]), "shape"),
        (_f32(shape=[True]), "shape"),
        (_f32(shape=[1] * 100), "shape"),
        (_f32(shape=[2**30] * 3, offsets=[0, 0]), "bytes of data"),  # wraps to 0 in int64
        (_f32(offsets=[4, 0]), "offsets"),
        (_f32(offsets=[0]), "offsets"),
        (_f32(offsets=[4, 8]), "does not start"),
        (_f32(offsets=[0, 8]), "past the end"),
        (_f32(shape=[2]), "bytes of data"),
        (_raw({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(9)), "trailing"),
        (
            _raw(
                {"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                np.array([np.inf], np.float32).tobytes(),
            ),
            "NaN or infinite",
        ),
        (_raw({"__metadata__": {"a": 1}}), "not a string"),
        (_raw({"__metadata__": []}), "metadata must be"),
        (_raw({"__metadata__": {ORDER_KEY: '["y"]'}}), ORDER_KEY),
        (_raw({"__metadata__": {ORDER_KEY: "not json"}}), ORDER_KEY),
    ],
)
def test_specific_malformations_are_named(body: bytes, words: str) -> None:
    with pytest.raises(WireFormatError, match=re.escape(words)):
        decode_weights(body)


def test_size_limit_is_enforced_before_parsing() -> None:
    with pytest.raises(WireFormatError, match="more than the 10 accepted"):
        decode_weights(encode_weights(_SAMPLE), max_bytes=10)


def test_a_body_exactly_at_the_limit_is_accepted() -> None:
    body = encode_weights(_SAMPLE)

    decoded, _ = decode_weights(body, max_bytes=len(body))

    assert list(decoded) == list(_SAMPLE)


@pytest.mark.parametrize(
    ("weights", "words"),
    [
        (
            {"layer.weight": np.zeros((4, 3), np.float32), "layer.bias": np.zeros(3, np.float32)},
            "shape",
        ),
        ({"layer.weight": np.zeros((3, 4), np.float32)}, "missing"),
        ({**_SAMPLE, "extra": np.zeros(1, np.float32)}, "unexpected"),
    ],
)
def test_tensors_that_do_not_fit_the_spec_are_rejected(weights: Weights, words: str) -> None:
    spec = spec_of({"layer.weight": _SAMPLE["layer.weight"], "layer.bias": _SAMPLE["layer.bias"]})

    with pytest.raises(UpdateRejectedError, match=words):
        decode_weights(encode_weights(weights), spec=spec)


# --- encoding mistakes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "metadata", "words"),
    [
        ({"__metadata__": np.zeros(1, np.float32)}, None, "__metadata__"),
        (_SAMPLE, {ORDER_KEY: "[]"}, "reserved"),
        (_SAMPLE, {"round": 3}, "strings to strings"),
    ],
)
def test_encoding_refuses_what_could_not_be_decoded(
    weights: Weights, metadata: dict[str, object] | None, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        encode_weights(weights, metadata=metadata)  # type: ignore[arg-type]
