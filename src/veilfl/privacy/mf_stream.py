"""Streaming encoder and decoder of a lower-triangular Toeplitz strategy.

For a strategy with coefficients c_0 .. c_(b-1) (c_0 != 0) over a stream of vectors:

* :class:`StreamingEncoder` (an aggregator, on field shares): y_t = sum_j c_j x_(t-j)
  (+ the round's noise share), modulo p, keeping the last b - 1 inputs. Because
  Shamir shares are linear, applied to shares it yields shares of C x + z
  (:mod:`veilfl.privacy.integer_strategy` gives the whole design).
* :class:`StreamingDecoder` (the coordinator, on floats): the forward substitution
  xhat_t = (y_t - sum_{j>=1} c_j xhat_(t-j)) / c_0, which solves C xhat = y one round
  at a time, keeping the last b - 1 outputs. Fed the released C x + z it yields
  x + C^-1 z; fed the noise z alone it is the *central* correlated-noise generator
  of the matrix mechanism (the coordinator adds (C^-1 z)_t to round t's sum).

Both keep O(b·d) state and are pure: :meth:`~StreamingEncoder.state` returns a
:class:`StreamState` that :meth:`StreamState.to_json` makes JSON-ready (the window
as base64 of little-endian bytes), and ``from_state`` resumes exactly where the
stream stopped. An encoder's state holds shares of past aggregates; a central
decoder's holds noise. Store either as secretly as the share spool.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from veilfl.crypto.field import FieldArray, PrimeField
from veilfl.errors import ConfigurationError, StorageError

__all__ = ["StreamState", "StreamingDecoder", "StreamingEncoder"]

_DTYPES: dict[str, type[np.generic]] = {"uint64": np.uint64, "float64": np.float64}


@dataclass(frozen=True, eq=False)
class StreamState:
    """Where a stream stands.

    Attributes:
        coefficients: The strategy's parameters: its coefficients (ints for an
            encoder), or a BLT's weights then decays.
        steps: Vectors processed so far.
        window: The stream's memory, shape (rows, d), dtype uint64 or float64: the
            last min(steps, b - 1) inputs (encoder) or outputs (decoder), most
            recent first, or a BLT stream's k buffers
            (:class:`~veilfl.privacy.blt.BltNoiseStream`).
    """

    coefficients: tuple[float, ...]
    steps: int
    window: npt.NDArray[Any] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready; the window as base64 of its little-endian bytes."""
        dtype: Literal["uint64", "float64"] = (
            "uint64" if self.window.dtype == np.uint64 else "float64"
        )
        raw = np.ascontiguousarray(self.window, dtype=np.dtype(dtype).newbyteorder("<"))
        return {
            "coefficients": list(self.coefficients),
            "steps": self.steps,
            "dtype": dtype,
            "shape": list(self.window.shape),
            "window": base64.b64encode(raw.tobytes()).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: Any) -> StreamState:
        """Inverse of :meth:`to_json`.

        Raises:
            StorageError: if the stored state is malformed.
        """
        try:
            dtype = np.dtype(_DTYPES[data["dtype"]]).newbyteorder("<")
            rows, length = (int(n) for n in data["shape"])
            window = np.frombuffer(base64.b64decode(data["window"], validate=True), dtype=dtype)
            coefficients = tuple(
                int(c) if isinstance(c, int) else float(c) for c in data["coefficients"]
            )
            return cls(
                coefficients=coefficients,
                steps=int(data["steps"]),
                window=window.reshape(rows, length).astype(dtype.newbyteorder("=")),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as error:
            raise StorageError(f"The stored stream state is malformed ({error}).") from None


def _check_length(length: int) -> None:
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ConfigurationError(f"A stream needs vectors of length >= 1; got {length!r}.")


def _check_resumed(state: StreamState, coefficients: tuple[float, ...], length: int) -> None:
    rows = min(state.steps, len(coefficients) - 1)
    if (
        state.coefficients != coefficients
        or state.steps < 0
        or state.window.shape != (rows, length)
    ):
        raise StorageError(
            "The stored stream state does not match the strategy or the vector length; "
            "it belongs to another run."
        )


class StreamingEncoder:
    """y_t = sum_j c_j x_(t-j) + noise_t over GF(p), one vector at a time.

    Args:
        coefficients: The integer coefficients c_0 .. c_(b-1) (any sign; reduced mod p).
        field: The prime field of the shares.
        length: d, the coordinates per vector.
        state: Where a previous encoder stopped (a restart), or None.

    Raises:
        ConfigurationError: for no coefficients, non-integer ones or length < 1.
        StorageError: for a state of another strategy or length.
    """

    def __init__(
        self,
        *,
        coefficients: Sequence[int],
        field: PrimeField,
        length: int,
        state: StreamState | None = None,
    ) -> None:
        if not coefficients or any(
            isinstance(c, bool) or not isinstance(c, int | np.integer) for c in coefficients
        ):
            raise ConfigurationError("The encoder needs at least one integer coefficient.")
        _check_length(length)
        self._coefficients = tuple(int(c) for c in coefficients)
        self._field = field
        self._length = length
        self._steps = 0
        self._window: list[FieldArray] = []
        if state is not None:
            _check_resumed(state, self._coefficients, length)
            self._steps = state.steps
            self._window = [np.asarray(row, dtype=np.uint64) for row in state.window]

    def __repr__(self) -> str:  # never print shares
        return f"StreamingEncoder(bands={len(self._coefficients)}, steps={self._steps})"

    @property
    def steps(self) -> int:
        """Vectors encoded so far."""
        return self._steps

    def release(self, aggregate: FieldArray, noise: FieldArray | None = None) -> FieldArray:
        """Encode the next vector: sum_j c_j x_(t-j) + ``noise`` (mod p).

        Args:
            aggregate: x_t, d field elements in [0, p).
            noise: The round's noise (share), d field elements, or None.

        Raises:
            ConfigurationError: for a vector of the wrong shape or out of the field.
        """
        current = self._element_vector(aggregate)
        total = self._field.mul_scalar(current, self._coefficients[0])
        for coefficient, past in zip(self._coefficients[1:], self._window, strict=False):
            total = self._field.add(total, self._field.mul_scalar(past, coefficient))
        if noise is not None:
            total = self._field.add(total, self._element_vector(noise))
        self._window = [current, *self._window][: len(self._coefficients) - 1]
        self._steps += 1
        return total

    def _element_vector(self, values: FieldArray) -> FieldArray:
        vector = np.asarray(values)
        if (
            vector.shape != (self._length,)
            or vector.dtype != np.uint64
            or np.any(vector >= self._field.p)
        ):
            raise ConfigurationError(
                f"The encoder takes {self._length} field elements (uint64 below p) per step."
            )
        return vector

    def state(self) -> StreamState:
        """The encoder's whole state (secret: shares of past aggregates)."""
        return StreamState(
            coefficients=self._coefficients,
            steps=self._steps,
            window=_stacked(self._window, self._length, np.uint64),
        )

    @classmethod
    def from_state(cls, state: StreamState, *, field: PrimeField) -> StreamingEncoder:
        """Resume the encoder that :meth:`state` described.

        Raises:
            ConfigurationError: for coefficients that are not integers.
            StorageError: for an inconsistent state.
        """
        coefficients = [c for c in state.coefficients if isinstance(c, int)]
        if len(coefficients) != len(state.coefficients) or state.window.dtype != np.uint64:
            raise StorageError("The stored stream state is not an encoder's.")
        return cls(
            coefficients=coefficients, field=field, length=state.window.shape[1], state=state
        )


class StreamingDecoder:
    """Forward substitution xhat_t = (y_t - sum_{j>=1} c_j xhat_(t-j)) / c_0.

    Args:
        coefficients: c_0 .. c_(b-1), c_0 != 0 (floats, or the integer coefficients
            of an :class:`~veilfl.privacy.integer_strategy.IntegerToeplitzStrategy`).
        length: d, the coordinates per vector.
        state: Where a previous decoder stopped (a restart), or None.

    Raises:
        ConfigurationError: for no coefficients, a zero or non-finite one, or length < 1.
        StorageError: for a state of another strategy or length.
    """

    def __init__(
        self,
        *,
        coefficients: Sequence[float],
        length: int,
        state: StreamState | None = None,
    ) -> None:
        values = np.asarray(coefficients, dtype=np.float64)
        if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
            raise ConfigurationError("The decoder needs finite coefficients.")
        if values[0] == 0:
            raise ConfigurationError("The decoder needs c_0 != 0 (an invertible strategy).")
        _check_length(length)
        self._coefficients = tuple(float(c) for c in values)
        self._values = values
        self._length = length
        self._steps = 0
        self._window: list[npt.NDArray[np.float64]] = []
        if state is not None:
            _check_resumed(state, self._coefficients, length)
            self._steps = state.steps
            self._window = [np.asarray(row, dtype=np.float64) for row in state.window]

    def __repr__(self) -> str:
        return f"StreamingDecoder(bands={self._values.size}, steps={self._steps})"

    @property
    def steps(self) -> int:
        """Vectors decoded so far."""
        return self._steps

    def decode(self, release: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The next xhat_t from y_t.

        Raises:
            ConfigurationError: for a vector of the wrong shape or with non-finite values.
        """
        current = np.asarray(release, dtype=np.float64)
        if current.shape != (self._length,) or not np.all(np.isfinite(current)):
            raise ConfigurationError(f"The decoder takes {self._length} finite values per step.")
        total = current.copy()
        for coefficient, past in zip(self._values[1:], self._window, strict=False):
            total -= coefficient * past
        decoded: npt.NDArray[np.float64] = total / float(self._values[0])
        self._window = [decoded, *self._window][: self._values.size - 1]
        self._steps += 1
        return decoded

    def state(self) -> StreamState:
        """The decoder's whole state."""
        return StreamState(
            coefficients=self._coefficients,
            steps=self._steps,
            window=_stacked(self._window, self._length, np.float64),
        )

    @classmethod
    def from_state(cls, state: StreamState) -> StreamingDecoder:
        """Resume the decoder that :meth:`state` described.

        Raises:
            StorageError: for an inconsistent state.
        """
        if state.window.dtype != np.float64:
            raise StorageError("The stored stream state is not a decoder's.")
        return cls(coefficients=state.coefficients, length=state.window.shape[1], state=state)


def _stacked(
    rows: list[npt.NDArray[Any]], length: int, dtype: type[np.generic]
) -> npt.NDArray[Any]:
    if not rows:
        return np.zeros((0, length), dtype=dtype)
    return np.stack(rows).astype(dtype)
