"""``veilfl export``: a run's global model as one safetensors file.

The file's metadata records ``model_name`` (a built-in model or a ``--learner``
spec), ``version`` and ``run_id``, so whoever loads it knows what to build (with
``--best``, the best model by the run's ``--best-metric`` and its score: ``best_metric``,
``best_value``, ``best_round_id``)::

    from safetensors.torch import load_file
    model = build_the_same_model()
    model.load_state_dict(load_file("model.safetensors"))
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from veilfl.errors import ConfigurationError, StorageError

if TYPE_CHECKING:
    from veilfl.server.checkpoints import CheckpointStore

__all__ = ["add_parser", "export_model", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``veilfl export``."""
    parser = subparsers.add_parser(
        "export", help="write a run's global model as safetensors (with its model name)"
    )
    parser.add_argument("--run-dir", type=Path, required=True, help="the run folder")
    parser.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--version",
        type=int,
        default=None,
        help="model version to export (default: the model of the last completed round)",
    )
    which.add_argument(
        "--best",
        action="store_true",
        help="export the best model by the run's --best-metric (checkpoints/best.safetensors)",
    )
    parser.set_defaults(func=run)


def export_model(
    run_dir: Path, out: Path, *, version: int | None = None, best: bool = False
) -> dict[str, str]:
    """Write version ``version`` (default: the latest completed), or with ``best`` the
    best model by the run's ``--best-metric``, of the run in ``run_dir`` to ``out``;
    return the metadata written.

    Raises:
        ConfigurationError: if ``run_dir`` holds no run, or no best model with ``best``.
        StorageError: if the version does not exist or cannot be read or written.
    """
    from veilfl.durable_files import write_atomically
    from veilfl.server.checkpoints import MODEL_KEY, VERSION_KEY, CheckpointStore
    from veilfl.server.run_store import RunStore
    from veilfl.wire.tensor_codec import encode_weights

    state = run_dir / "run.sqlite"
    checkpoints = CheckpointStore(run_dir / "checkpoints")
    run_id = model_name = None
    latest = None
    if state.exists():
        with RunStore(state) as store:
            run_id = store.run_id()
            model_name = store.config().get("model_name")
            last = store.last_completed_round()
            latest = 0 if last is None else last.model_version_after
    else:
        latest = checkpoints.latest_version()
    if latest is None:
        raise ConfigurationError(
            f"--run-dir {run_dir} holds no run (no run.sqlite and no checkpoints); name the "
            "folder a veilfl server wrote."
        )
    if best:
        return _export_best(run_dir, out, checkpoints, run_id=run_id, model_name=model_name)
    chosen = latest if version is None else version
    if chosen > latest and state.exists():
        raise StorageError(
            f"Run {run_id} has completed model versions 0..{latest}; there is no version "
            f"{chosen} to export."
        )
    weights, recorded = checkpoints.load_with_metadata(chosen)
    metadata = {
        MODEL_KEY: str(recorded.get(MODEL_KEY) or model_name or "unknown"),
        VERSION_KEY: str(chosen),
    }
    if run_id:
        metadata["run_id"] = str(run_id)
    write_atomically(out, encode_weights(weights, metadata=metadata))
    return metadata


def _export_best(
    run_dir: Path,
    out: Path,
    checkpoints: CheckpointStore,
    *,
    run_id: object,
    model_name: object,
) -> dict[str, str]:
    from veilfl.durable_files import write_atomically
    from veilfl.server.checkpoints import MODEL_KEY, VERSION_KEY
    from veilfl.wire.tensor_codec import encode_weights

    kept = checkpoints.load_best()
    if kept is None:
        raise ConfigurationError(
            f"Run folder {run_dir} holds no best model yet (no round reported its "
            "--best-metric); export a version with --version, or leave out --best."
        )
    weights, best, recorded = kept
    metadata = {
        MODEL_KEY: str(recorded.get(MODEL_KEY) or model_name or "unknown"),
        VERSION_KEY: str(best.version),
        **best.to_metadata(),
    }
    if run_id:
        metadata["run_id"] = str(run_id)
    write_atomically(out, encode_weights(weights, metadata=metadata))
    return metadata


def run(args: argparse.Namespace) -> int:
    """Export the model and say what was written."""
    metadata = export_model(args.run_dir, args.out, version=args.version, best=args.best)
    scored = (
        f" (best by {metadata['best_metric']}: {float(metadata['best_value']):.4f})"
        if "best_metric" in metadata
        else ""
    )
    print(
        f"wrote {args.out}: model {metadata['model_name']}, version {metadata['version']}"
        + (f" of run {metadata['run_id']}" if "run_id" in metadata else "")
        + scored
    )
    return 0
