"""A :class:`~veilfl.secagg.aggregator_state.ShareArchive` on disk.

Each client's share waits in its own file until the round is dropped, so the
aggregator's memory stays O(model size) however many clients report, and a restarted
aggregator finds every share it acknowledged. A file holds the client id and the
contribution share; it is written to a temporary name, fsynced and renamed (then the
folder fsynced) before the share is acknowledged, so a crash leaves either the whole
share or none. The participant list the aggregator committed to is kept the same way in
``answer.json``, the query seed it answered in ``query.hex``. Shares are not secret on
their own (each is uniformly random), but the folder is still made private (0700).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

from veilfl.durable_files import write_atomically
from veilfl.errors import StorageError, WireFormatError

__all__ = ["FileShareArchive"]

_SUFFIX = ".share"
_ANSWER = "answer.json"
_QUERY = "query.hex"
_ID_LENGTH = struct.Struct(">H")


class FileShareArchive:
    """Shares of one round, one file per client, under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, client_id: str) -> Path:
        # Client ids come from the network: never use them as file names directly.
        digest = hashlib.sha256(client_id.encode("utf-8", "surrogatepass")).hexdigest()
        return self._directory / f"{digest}{_SUFFIX}"

    def put(self, client_id: str, payload: bytes) -> None:
        """Store ``client_id``'s contribution share durably."""
        name = client_id.encode("utf-8", "surrogatepass")
        write_atomically(self._path(client_id), _ID_LENGTH.pack(len(name)) + name + payload)

    def _read(self, path: Path) -> tuple[str, bytes]:
        data = path.read_bytes()
        if len(data) < _ID_LENGTH.size:
            raise WireFormatError(f"{path} is too short to hold a share.")
        (size,) = _ID_LENGTH.unpack_from(data)
        start = _ID_LENGTH.size + size
        client_id = data[_ID_LENGTH.size : start].decode("utf-8", "surrogatepass")
        return client_id, data[start:]

    def get(self, client_id: str) -> bytes:
        """Read ``client_id``'s share back.

        Raises:
            StorageError: if the file is missing or holds another client's share.
        """
        path = self._path(client_id)
        try:
            stored_id, share = self._read(path)
        except (OSError, WireFormatError, UnicodeDecodeError) as exc:
            raise StorageError(f"The spooled share {path} cannot be read: {exc}") from exc
        if stored_id != client_id:
            raise StorageError(f"The spooled share {path} belongs to another client.")
        return share

    def items(self) -> Iterator[tuple[str, bytes]]:
        """Every stored (client id, share), in file-name order.

        Raises:
            StorageError: if a share file cannot be read (the spool is damaged).
        """
        for path in sorted(self._directory.glob(f"*{_SUFFIX}")):
            try:
                yield self._read(path)
            except (OSError, WireFormatError, UnicodeDecodeError) as exc:
                raise StorageError(
                    f"The spooled share {path} cannot be read ({exc}); the spool is damaged."
                ) from exc

    def record_answer(self, participants: frozenset[str]) -> None:
        """Write the answered participant list durably."""
        write_atomically(self._directory / _ANSWER, json.dumps(sorted(participants)).encode())

    def recorded_answer(self) -> frozenset[str] | None:
        """The answered participant list, if the round was aggregated."""
        path = self._directory / _ANSWER
        if not path.exists():
            return None
        try:
            return frozenset(str(c) for c in json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise StorageError(f"{path} cannot be read ({exc}); the spool is damaged.") from exc

    def record_query(self, query_seed: bytes) -> None:
        """Write the answered query seed durably."""
        write_atomically(self._directory / _QUERY, query_seed.hex().encode())

    def recorded_query(self) -> bytes | None:
        """The answered query seed, if any."""
        path = self._directory / _QUERY
        if not path.exists():
            return None
        try:
            return bytes.fromhex(path.read_text())
        except (OSError, ValueError) as exc:
            raise StorageError(f"{path} cannot be read ({exc}); the spool is damaged.") from exc

    def clear(self) -> None:
        """Delete the round's folder."""
        shutil.rmtree(self._directory, ignore_errors=True)
