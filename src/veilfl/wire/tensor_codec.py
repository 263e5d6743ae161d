"""Named float32 tensors as bytes: the safetensors format, checked on the way in.

safetensors is an 8-byte little-endian header length, a JSON header
(``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}``) and the
raw little-endian data. Decoding validates the header before trusting any of it:
any malformed input raises :class:`~veilfl.errors.WireFormatError` (and, when a
``spec`` is given, a tensor that does not fit the model raises
:class:`~veilfl.errors.UpdateRejectedError`), never another exception.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors.numpy import save

from veilfl.errors import WireFormatError
from veilfl.tensors import TensorSpec, Weights

__all__ = ["decode_weights", "encode_weights"]

_MAX_HEADER_BYTES = 16 * 2**20


def encode_weights(
    weights: Mapping[str, np.ndarray], *, metadata: Mapping[str, str] | None = None
) -> bytes:
    """Encode float32 tensors (in their order) and string metadata as safetensors bytes."""
    arrays = {name: np.array(array, dtype=np.float32, order="C") for name, array in weights.items()}
    return bytes(save(arrays, metadata=dict(metadata) if metadata else None))


def decode_weights(
    data: bytes, *, spec: TensorSpec | None = None, max_bytes: int | None = None
) -> tuple[Weights, dict[str, str]]:
    """Decode safetensors bytes into float32 tensors and their metadata.

    Args:
        data: The bytes.
        spec: If given, the tensors must have exactly these names and shapes.
        max_bytes: If given, larger inputs are refused before parsing.

    Returns:
        The tensors in the spec's order (or the header's order) and the metadata.

    Raises:
        WireFormatError: naming what is malformed.
        UpdateRejectedError: if the tensors do not fit ``spec``.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise WireFormatError(
            f"The body is {len(data)} bytes, more than the {max_bytes} this server accepts."
        )
    header, body = _split(data)
    metadata = _metadata(header)
    weights: Weights = {}
    end_of_last = 0
    entries = sorted(
        ((name, entry) for name, entry in header.items() if name != "__metadata__"),
        key=lambda item: _offsets(item[0], item[1])[0],
    )
    for name, entry in entries:
        shape = _checked_shape(name, entry)
        begin, end = _offsets(name, entry)
        if begin != end_of_last or end > len(body):
            raise WireFormatError(f"The data offsets of tensor {name!r} are out of place.")
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != 4 * count:
            raise WireFormatError(
                f"Tensor {name!r} has {end - begin} bytes of data for shape {shape}."
            )
        array = np.frombuffer(body, dtype="<f4", count=count, offset=begin).reshape(shape)
        if not np.isfinite(array).all():
            raise WireFormatError(f"Tensor {name!r} contains NaN or infinite values.")
        weights[name] = array.astype(np.float32)  # a writable, native-order copy
        end_of_last = end
    if end_of_last != len(body):
        raise WireFormatError("The body has trailing bytes after the last tensor.")
    if spec is not None:
        spec.check(weights)
        weights = {name: weights[name] for name in spec.names}
    return weights, metadata


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    if len(data) < 8:
        raise WireFormatError("The body is too short to hold a safetensors header.")
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(len(data) - 8, _MAX_HEADER_BYTES):
        raise WireFormatError("The safetensors header length is larger than the body.")
    try:
        header = json.loads(data[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireFormatError(f"The safetensors header is not valid JSON: {exc}.") from exc
    if not isinstance(header, dict):
        raise WireFormatError("The safetensors header must be a JSON object.")
    return header, data[8 + length :]


def _metadata(header: dict[str, Any]) -> dict[str, str]:
    metadata = header.get("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise WireFormatError("The safetensors metadata must map strings to strings.")
    return metadata


def _checked_shape(name: str, entry: Any) -> tuple[int, ...]:
    if not isinstance(entry, dict):
        raise WireFormatError(f"The header entry of tensor {name!r} is not an object.")
    dtype = entry.get("dtype")
    if dtype != "F32":
        raise WireFormatError(f"Tensor {name!r} has dtype {dtype!r}; only F32 is accepted.")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in shape
    ):
        raise WireFormatError(f"Tensor {name!r} has a malformed shape.")
    return tuple(shape)


def _offsets(name: str, entry: Any) -> tuple[int, int]:
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in offsets)
        or offsets[0] > offsets[1]
    ):
        raise WireFormatError(f"Tensor {name!r} has malformed data offsets.")
    return int(offsets[0]), int(offsets[1])
