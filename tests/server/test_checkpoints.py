"""Atomic model checkpoints: round trips, interrupted writes, missing and corrupt files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from veilfl.errors import StorageError
from veilfl.server.checkpoints import CheckpointStore, write_atomically
from veilfl.tensors import Weights
from veilfl.wire.tensor_codec import decode_weights

_WEIGHTS: Weights = {
    "fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
    "fc.bias": np.array([-1.0, 0.25], dtype=np.float32),
}


def test_a_saved_version_loads_with_the_same_names_order_and_values(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt")

    path = store.save(3, _WEIGHTS, metadata={"round_id": "3"})
    loaded = store.load(3)

    assert path == tmp_path / "ckpt" / "model_v000003.safetensors"
    assert list(loaded) == list(_WEIGHTS)
    for name, array in _WEIGHTS.items():
        np.testing.assert_array_equal(loaded[name], array)
    _, metadata = decode_weights(path.read_bytes())
    assert metadata == {"round_id": "3", "version": "3"}


def test_latest_version_is_the_highest_on_disk(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    for version in (0, 2, 1, 1_000_000):
        store.save(version, _WEIGHTS)

    assert store.latest_version() == 1_000_000
    assert store.path_for(1_000_000).name == "model_v1000000.safetensors"


def test_latest_version_is_none_without_checkpoints(tmp_path: Path) -> None:
    assert CheckpointStore(tmp_path / "missing").latest_version() is None
    assert CheckpointStore(tmp_path).latest_version() is None


def test_leftover_temporary_and_foreign_files_are_ignored(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(3, _WEIGHTS)
    (tmp_path / ".model_v000004.safetensors.k2j3h4").write_bytes(b"half a file")
    (tmp_path / "model_v0000005.safetensors").write_bytes(b"not how we name version 5")
    (tmp_path / "model_v6.safetensors").write_bytes(b"nor version 6")
    (tmp_path / "model_v000007.safetensors").mkdir()

    assert store.latest_version() == 3


def test_a_failed_replace_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(tmp_path)
    store.save(1, _WEIGHTS)
    before = store.path_for(1).read_bytes()

    def crash(source: str, target: Path) -> None:
        raise OSError("disk pulled out")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StorageError, match=r"could not be written.*disk pulled out"):
        store.save(1, {"other": np.zeros(1, np.float32)})

    assert store.path_for(1).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_v000001.safetensors"]


def test_write_atomically_fsyncs_the_file_and_then_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[bool] = []
    real_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(descriptor).st_mode))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)

    write_atomically(tmp_path / "sub" / "file.bin", b"data")

    assert (tmp_path / "sub" / "file.bin").read_bytes() == b"data"
    assert synced == [False, True]


def test_a_missing_version_is_a_storage_error_naming_it(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(3, _WEIGHTS)

    with pytest.raises(StorageError, match=r"no checkpoint of version 4.*latest on disk is 3"):
        store.load(4)


def test_a_corrupt_checkpoint_is_a_storage_error(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.path_for(1).write_bytes(b"\x00" * 20)

    with pytest.raises(StorageError, match="cannot be read"):
        store.load(1)


def test_a_renamed_checkpoint_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(1, _WEIGHTS).rename(store.path_for(2))

    with pytest.raises(StorageError, match="records version 1, not 2"):
        store.load(2)


def test_negative_versions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="non-negative"):
        CheckpointStore(tmp_path).save(-1, _WEIGHTS)


def test_an_unwritable_folder_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")

    with pytest.raises(StorageError, match="could not be written"):
        CheckpointStore(tmp_path / "file" / "ckpt").save(0, _WEIGHTS)
