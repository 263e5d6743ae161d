"""``veilfl export``: a run's global model as one safetensors file.

The file's metadata records ``model_name`` (a built-in model or a ``--learner``
spec), ``version`` and ``run_id``, so whoever loads it knows what to build::

    from safetensors.torch import load_file
    model = build_the_same_model()
    model.load_state_dict(load_file("model.safetensors"))
"""

from __future__ import annotations

import argparse
from pathlib import Path

from veilfl.errors import ConfigurationError, StorageError

__all__ = ["add_parser", "export_model", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``veilfl export``."""
    parser = subparsers.add_parser(
        "export", help="write a run's global model as safetensors (with its model name)"
    )
    parser.add_argument("--run-dir", type=Path, required=True, help="the run folder")
    parser.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    parser.add_argument(
        "--version",
        type=int,
        default=None,
        help="model version to export (default: the model of the last completed round)",
    )
    parser.set_defaults(func=run)


def export_model(run_dir: Path, out: Path, *, version: int | None = None) -> dict[str, str]:
    """Write version ``version`` (default: the latest completed) of the run in
    ``run_dir`` to ``out``; return the metadata written.

    Raises:
        ConfigurationError: if ``run_dir`` holds no run.
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


def run(args: argparse.Namespace) -> int:
    """Export the model and say what was written."""
    metadata = export_model(args.run_dir, args.out, version=args.version)
    print(
        f"wrote {args.out}: model {metadata['model_name']}, version {metadata['version']}"
        + (f" of run {metadata['run_id']}" if "run_id" in metadata else "")
    )
    return 0
