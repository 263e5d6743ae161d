"""Global model checkpoints: one safetensors file per version, written atomically."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from veilfl.errors import StorageError, WireFormatError
from veilfl.tensors import Weights
from veilfl.wire.tensor_codec import decode_weights, encode_weights

__all__ = ["CheckpointStore", "write_atomically"]

_NAME = re.compile(r"^model_v(\d{6,})\.safetensors$")


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new, never half.

    Writes a temporary file in the same folder, flushes and fsyncs it, renames it over
    ``path`` and fsyncs the folder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class CheckpointStore:
    """The global model's versions in ``directory`` (``model_v000042.safetensors``)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def path_for(self, version: int) -> Path:
        """Where version ``version`` lives."""
        return self._directory / f"model_v{version:06d}.safetensors"

    def save(
        self, version: int, weights: Weights, *, metadata: Mapping[str, str] | None = None
    ) -> Path:
        """Write version ``version`` atomically.

        Raises:
            StorageError: if the file cannot be written.
        """
        path = self.path_for(version)
        body = encode_weights(weights, metadata={**(metadata or {}), "version": str(version)})
        try:
            write_atomically(path, body)
        except OSError as exc:
            raise StorageError(f"Checkpoint {path} could not be written: {exc}.") from exc
        return path

    def load(self, version: int) -> Weights:
        """Read version ``version``.

        Raises:
            StorageError: if it is missing or unreadable.
        """
        path = self.path_for(version)
        try:
            weights, _ = decode_weights(path.read_bytes())
        except FileNotFoundError:
            raise StorageError(f"There is no checkpoint of version {version} at {path}.") from None
        except (OSError, WireFormatError) as exc:
            raise StorageError(f"Checkpoint {path} cannot be read: {exc}") from exc
        return weights

    def latest_version(self) -> int | None:
        """The highest version on disk (temporary files are ignored)."""
        if not self._directory.is_dir():
            return None
        versions = [
            int(match.group(1))
            for entry in self._directory.iterdir()
            if (match := _NAME.match(entry.name))
        ]
        return max(versions, default=None)
