"""Named float32 tensors as bytes: the safetensors format, checked on the way in.

A safetensors file is an 8-byte little-endian header length ``N``, ``N`` bytes of JSON
header (``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}``)
and the raw little-endian tensor data, packed back to back in offset order.

Encoding uses :func:`safetensors.numpy.save`. Decoding parses the bytes itself, because
it must treat them as hostile: the header is validated completely before any of it is
trusted, and every way the bytes can be wrong raises
:class:`~veilfl.errors.WireFormatError` with a message that names the problem, never
another exception. The decoder is stricter than safetensors (only ``F32``, finite
values, no duplicate or unknown header keys, no padding before the JSON); the tests
check that whatever it accepts, :func:`safetensors.numpy.load` accepts too and reads
the same arrays.

safetensors itself stores tensors sorted by name, so :func:`encode_weights` records the
caller's order in the reserved metadata key :data:`ORDER_KEY`, and
:func:`decode_weights` restores it and removes the key from the metadata it returns.
Files written by other tools, which lack the key, decode in offset order.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt
from safetensors.numpy import save

from veilfl.errors import WireFormatError
from veilfl.tensors import TensorSpec, Weights

__all__ = ["MAX_HEADER_BYTES", "MAX_NDIM", "ORDER_KEY", "decode_weights", "encode_weights"]

ORDER_KEY = "veilfl.tensor_order"
"""Reserved metadata key: a JSON list of the tensor names in the encoder's order."""

MAX_HEADER_BYTES = 16 * 2**20
"""Largest JSON header the decoder reads (safetensors itself allows 100 MB)."""

MAX_NDIM = 32
"""Most dimensions a decoded tensor may have (numpy allows 64)."""

_MAX_DIM = 2**31 - 1
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})
_FLOAT32_BYTES = 4


def encode_weights(
    weights: Mapping[str, npt.NDArray[np.generic]],
    *,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """Encode tensors, in their iteration order, and string metadata as safetensors bytes.

    Arrays are cast to float32 (C order) first. Their values are not checked: a NaN or
    infinite value encodes, but :func:`decode_weights` refuses it.

    Args:
        weights: Named tensors.
        metadata: String key-value pairs stored in the header's ``__metadata__``.

    Returns:
        The safetensors bytes.

    Raises:
        ValueError: if a tensor is named ``__metadata__``, a metadata key or value is
            not a string, or the metadata uses the reserved key :data:`ORDER_KEY`.
    """
    if "__metadata__" in weights:
        raise ValueError("A tensor cannot be named '__metadata__'; rename it.")
    extra = dict(metadata or {})
    if ORDER_KEY in extra:
        raise ValueError(f"The metadata key {ORDER_KEY!r} is reserved for the tensor order.")
    for key, value in extra.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(
                f"Metadata must map strings to strings; {key!r} maps to {type(value).__name__}."
            )
    arrays = {name: np.array(array, dtype=np.float32, order="C") for name, array in weights.items()}
    extra[ORDER_KEY] = json.dumps(list(arrays))
    return bytes(save(arrays, metadata=extra))


def decode_weights(
    data: bytes, *, spec: TensorSpec | None = None, max_bytes: int | None = None
) -> tuple[Weights, dict[str, str]]:
    """Decode safetensors bytes into float32 tensors and their metadata.

    Args:
        data: The bytes, as received from a peer or read from disk.
        spec: If given, the tensors must have exactly these names and shapes, and are
            returned in the spec's order.
        max_bytes: If given, a larger input is refused before any parsing.

    Returns:
        The tensors (writable, native-order copies) in the spec's order, else the
        encoder's order, and the metadata without the reserved :data:`ORDER_KEY`.

    Raises:
        WireFormatError: if the bytes are not a well-formed safetensors file of finite
            float32 tensors; the message names what is wrong.
        UpdateRejectedError: if ``spec`` is given and the names or shapes differ from it.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise WireFormatError(
            f"The body is {len(data)} bytes, more than the {max_bytes} accepted; "
            "send a smaller model or raise the limit."
        )
    header, body = _split(data)
    metadata = _metadata(header)
    entries = [
        (name, _entry(name, entry)) for name, entry in header.items() if name != "__metadata__"
    ]
    entries.sort(key=lambda item: item[1][1])
    weights: Weights = {}
    end_of_last = 0
    for name, (shape, begin, end) in entries:
        if begin != end_of_last:
            _fail(f"The data of tensor {name!r} does not start where the previous tensor ends.")
        if end > len(body):
            _fail(f"The data of tensor {name!r} runs past the end of the body.")
        count = math.prod(shape)
        if end - begin != _FLOAT32_BYTES * count:
            _fail(f"Tensor {name!r} has {end - begin} bytes of data for shape {shape}.")
        array = np.frombuffer(body, dtype="<f4", count=count, offset=begin).reshape(shape)
        if not np.isfinite(array).all():
            _fail(f"Tensor {name!r} contains NaN or infinite values.")
        weights[name] = array.astype(np.float32)  # a writable, native-order copy
        end_of_last = end
    if end_of_last != len(body):
        _fail(f"The body has {len(body) - end_of_last} trailing bytes after the last tensor.")
    order = metadata.pop(ORDER_KEY, None)
    if order is not None:
        weights = _reorder(weights, order)
    if spec is not None:
        spec.check(weights)
        weights = {name: weights[name] for name in spec.names}
    return weights, metadata


def _fail(message: str) -> NoReturn:
    raise WireFormatError(message)


def _reject_constant(token: str) -> NoReturn:
    _fail(f"The safetensors header contains {token}, which is not JSON.")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            _fail(f"The safetensors header repeats the key {key!r}.")
        out[key] = value
    return out


def _split(data: bytes) -> tuple[dict[str, Any], memoryview]:
    if len(data) < 8:
        _fail(f"The body is {len(data)} bytes, too short to hold a safetensors header.")
    (length,) = struct.unpack("<Q", data[:8])
    if length > MAX_HEADER_BYTES:
        _fail(f"The safetensors header claims {length} bytes, more than {MAX_HEADER_BYTES}.")
    if length > len(data) - 8:
        _fail(f"The safetensors header claims {length} bytes, but the body is shorter.")
    raw = bytes(data[8 : 8 + length])
    if not raw.startswith(b"{"):
        _fail("The safetensors header must start with '{'.")
    try:
        header = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_unique_object,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        _fail(f"The safetensors header is not valid JSON: {exc}")
    if not isinstance(header, dict):
        _fail("The safetensors header must be a JSON object.")
    for name in header:
        _check_text(name, "a tensor name")
    return header, memoryview(data)[8 + length :]


def _check_text(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        _fail(f"The safetensors header holds {what} that is not valid Unicode.")


def _metadata(header: dict[str, Any]) -> dict[str, str]:
    metadata = header.get("__metadata__")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        _fail("The safetensors metadata must be a JSON object of strings.")
    for key, value in metadata.items():
        if not isinstance(value, str):
            _fail(f"The safetensors metadata value of {key!r} is not a string.")
        _check_text(key, "a metadata key")
        _check_text(value, "a metadata value")
    return dict(metadata)


def _natural(value: Any, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


def _entry(name: str, entry: Any) -> tuple[tuple[int, ...], int, int]:
    """Check one header entry; return its shape and data offsets."""
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        _fail(
            f"The header entry of tensor {name!r} must be an object with exactly the keys "
            "dtype, shape and data_offsets."
        )
    dtype = entry["dtype"]
    if dtype != "F32":
        _fail(f"Tensor {name!r} has dtype {dtype!r}; only F32 is accepted.")
    shape = entry["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(_natural(n, _MAX_DIM) for n in shape)
    ):
        _fail(
            f"Tensor {name!r} has a malformed shape: it must be a list of at most "
            f"{MAX_NDIM} non-negative integers."
        )
    offsets = entry["data_offsets"]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_natural(n, 2**63) for n in offsets)
        or offsets[0] > offsets[1]
    ):
        _fail(f"Tensor {name!r} has malformed data offsets; expected [begin, end].")
    return tuple(shape), offsets[0], offsets[1]


def _reorder(weights: Weights, order_json: str) -> Weights:
    try:
        order = json.loads(order_json)
    except (ValueError, RecursionError):
        order = None
    if (
        not isinstance(order, list)
        or not all(isinstance(name, str) for name in order)
        or len(order) != len(weights)
        or set(order) != set(weights)
    ):
        _fail(
            f"The metadata key {ORDER_KEY!r} must list every tensor name exactly once; "
            "re-encode the weights with veilfl."
        )
    return {name: weights[name] for name in order}
