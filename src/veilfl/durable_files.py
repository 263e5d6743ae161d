"""Durable file writes: a crash leaves the old file or the new one, never half of either.

The one helper every part of veilfl that keeps state on disk uses (checkpoints, metrics
files, the aggregators' share spools and markers).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from veilfl.errors import StorageError

__all__ = ["write_atomically"]


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new, never half.

    Creates the parent folder if needed, writes a temporary file (``.{name}.*``) in it,
    flushes and fsyncs that, renames it over ``path`` and fsyncs the folder.

    Raises:
        StorageError: if any step fails; the temporary file is removed.
    """
    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        temporary = None
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as exc:
        raise StorageError(
            f"{path} could not be written ({exc}); check that its folder is writable "
            "and the disk is not full."
        ) from exc
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
