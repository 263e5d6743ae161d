"""A :class:`~veilfl.secagg.aggregator_state.ShareArchive` on disk.

Each client's share waits in its own file until the round is aggregated, so the
aggregator's memory stays O(model size) however many clients report. Shares are
not secret on their own (each is uniformly random), but the folder is still made
private (0700).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from veilfl.crypto.envelope import decode_share, encode_share
from veilfl.crypto.field import PrimeField
from veilfl.crypto.shamir import Share

__all__ = ["FileShareArchive"]


class FileShareArchive:
    """Shares of one round, one file per client, under ``directory``."""

    def __init__(self, directory: Path, *, vector_length: int, field: PrimeField) -> None:
        self._directory = directory
        self._length = vector_length
        self._field = field
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, client_id: str) -> Path:
        # Client ids come from the network: never use them as file names directly.
        return self._directory / f"{hashlib.sha256(client_id.encode()).hexdigest()}.share"

    def put(self, client_id: str, share: Share) -> None:
        """Store ``client_id``'s share."""
        self._path(client_id).write_bytes(encode_share(share))

    def get(self, client_id: str) -> Share:
        """Read ``client_id``'s share back."""
        return decode_share(
            self._path(client_id).read_bytes(), expected_length=self._length, field=self._field
        )

    def clear(self) -> None:
        """Delete the round's folder."""
        shutil.rmtree(self._directory, ignore_errors=True)
