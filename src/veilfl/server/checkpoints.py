"""Global model checkpoints: one safetensors file per version, written atomically.

Version ``v`` lives in ``model_v{v:06d}.safetensors`` (more digits past 999999), and the
best version by the run's ``--best-metric`` is copied to ``best.safetensors`` with its
score in the metadata (:mod:`veilfl.protocol.best_model`). A file
is written to a temporary name in the same folder, flushed and fsynced, renamed over the
final name and the folder fsynced, so a crash at any moment leaves either no file or the
whole file under the final name; a leftover temporary file never looks like a version.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from veilfl.durable_files import write_atomically
from veilfl.errors import StorageError, WireFormatError
from veilfl.protocol.best_model import BestModel
from veilfl.tensors import Weights
from veilfl.wire.tensor_codec import decode_weights, encode_weights

__all__ = ["BEST_FILE", "MODEL_KEY", "VERSION_KEY", "CheckpointStore"]

VERSION_KEY = "version"
"""Metadata key under which :meth:`CheckpointStore.save` records the version."""

MODEL_KEY = "model_name"
"""Metadata key under which :meth:`CheckpointStore.save` records the run's model (a
built-in model name or a ``--learner`` spec)."""

BEST_FILE = "best.safetensors"
"""The best version's copy, in the checkpoint folder (never taken for a version)."""

_NAME = re.compile(r"^model_v(\d{6,})\.safetensors$")


class CheckpointStore:
    """The global model's versions in ``directory`` (``model_v000042.safetensors``).

    Args:
        directory: The folder; created on the first :meth:`save`.
        model_name: The model these checkpoints belong to: recorded in each one saved,
            and checked in each one loaded that records a model.
    """

    def __init__(self, directory: Path, *, model_name: str | None = None) -> None:
        self._directory = directory
        self._model_name = model_name

    @property
    def directory(self) -> Path:
        """The folder holding the checkpoints."""
        return self._directory

    def path_for(self, version: int) -> Path:
        """Where version ``version`` lives (whether or not it exists).

        Raises:
            StorageError: if ``version`` is negative.
        """
        if version < 0:
            raise StorageError(f"Model versions are non-negative; {version} is not a version.")
        return self._directory / f"model_v{version:06d}.safetensors"

    def save(
        self, version: int, weights: Weights, *, metadata: Mapping[str, str] | None = None
    ) -> Path:
        """Write version ``version`` atomically, replacing any earlier file of that version.

        Args:
            version: The model version, zero or more.
            weights: The model's tensors (stored in their order).
            metadata: Extra string metadata; the key :data:`VERSION_KEY` is set to
                ``version`` and :data:`MODEL_KEY` to the store's model (if it has one),
                overriding any value given.

        Returns:
            The checkpoint's path.

        Raises:
            StorageError: if ``version`` is negative or the file cannot be written.
        """
        path = self.path_for(version)
        recorded = {**(metadata or {}), VERSION_KEY: str(version)}
        if self._model_name is not None:
            recorded[MODEL_KEY] = self._model_name
        body = encode_weights(weights, metadata=recorded)
        write_atomically(path, body)
        return path

    def load(self, version: int) -> Weights:
        """Read version ``version``, in the order it was saved.

        Raises:
            StorageError: if it is missing, unreadable, malformed, records another
                version than its file name says, or another model than the store's.
        """
        return self.load_with_metadata(version)[0]

    def load_with_metadata(self, version: int) -> tuple[Weights, dict[str, str]]:
        """Read version ``version`` and its metadata (:data:`VERSION_KEY`,
        :data:`MODEL_KEY` when recorded, and whatever the saver added).

        Raises:
            StorageError: as :meth:`load`.
        """
        path = self.path_for(version)
        try:
            weights, metadata = decode_weights(path.read_bytes())
        except FileNotFoundError:
            raise StorageError(
                f"There is no checkpoint of version {version} at {path}; "
                f"the latest on disk is {self.latest_version()}."
            ) from None
        except (OSError, WireFormatError) as exc:
            raise StorageError(
                f"Checkpoint {path} cannot be read ({exc}); restore it from a backup "
                "or start a new run."
            ) from exc
        recorded = metadata.get(VERSION_KEY)
        if recorded is not None and recorded != str(version):
            raise StorageError(
                f"Checkpoint {path} records version {recorded}, not {version}; "
                "a file was copied or renamed by hand."
            )
        model = metadata.get(MODEL_KEY)
        if self._model_name is not None and model is not None and model != self._model_name:
            raise StorageError(
                f"Checkpoint {path} belongs to the model {model}, not {self._model_name}; "
                "it was copied from another run."
            )
        return weights, dict(metadata)

    @property
    def best_path(self) -> Path:
        """Where the best version's copy lives (whether or not it exists)."""
        return self._directory / BEST_FILE

    def save_best(self, best: BestModel, weights: Weights) -> Path:
        """Write ``weights`` (version ``best.version``) as the best model, atomically,
        with ``best``'s score in the metadata.

        Raises:
            StorageError: if the file cannot be written.
        """
        recorded = {**best.to_metadata(), VERSION_KEY: str(best.version)}
        if self._model_name is not None:
            recorded[MODEL_KEY] = self._model_name
        write_atomically(self.best_path, encode_weights(weights, metadata=recorded))
        return self.best_path

    def load_best(self) -> tuple[Weights, BestModel, dict[str, str]] | None:
        """The best model, its score and its metadata; None when none was saved.

        Raises:
            StorageError: if the file is unreadable, or of another model than the store's.
        """
        path = self.best_path
        try:
            weights, metadata = decode_weights(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, WireFormatError) as exc:
            raise StorageError(
                f"The best checkpoint {path} cannot be read ({exc}); delete it (the next "
                "better round writes it again) or restore it from a backup."
            ) from exc
        model = metadata.get(MODEL_KEY)
        if self._model_name is not None and model is not None and model != self._model_name:
            raise StorageError(
                f"Checkpoint {path} belongs to the model {model}, not {self._model_name}; "
                "it was copied from another run."
            )
        try:
            version = int(metadata[VERSION_KEY])
        except (KeyError, ValueError):
            version = -1
        best = BestModel.from_metadata(dict(metadata), version=version)
        if best is None or version < 0:
            raise StorageError(
                f"The best checkpoint {path} records no version or score; delete it (the "
                "next better round writes it again)."
            )
        return weights, best, dict(metadata)

    def latest_version(self) -> int | None:
        """The highest version on disk, or None if there is none.

        Only files named exactly as :meth:`path_for` names them count; temporary
        files left by an interrupted write are ignored.

        Raises:
            StorageError: if the folder cannot be listed.
        """
        try:
            if not self._directory.is_dir():
                return None
            names = [entry.name for entry in self._directory.iterdir() if entry.is_file()]
        except OSError as exc:
            raise StorageError(
                f"The checkpoint folder {self._directory} cannot be read: {exc}."
            ) from exc
        versions = [
            int(match.group(1))
            for name in names
            if (match := _NAME.match(name)) and self.path_for(int(match.group(1))).name == name
        ]
        return max(versions, default=None)
