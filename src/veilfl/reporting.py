"""Round metrics for people: a table on the terminal, JSON and CSV files, a PNG plot.

The files go into the run folder and are rewritten whole (atomically) after each round:
``metrics.json`` (a list of objects with the fields of :class:`RoundMetrics`, missing
and non-finite values as ``null``), ``metrics.csv`` (the same columns, missing values
empty) and ``metrics.png``. Plots use matplotlib's Agg canvas on a private
:class:`~matplotlib.figure.Figure`, never pyplot's global state, so they are safe in
servers and threads.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

from veilfl.durable_files import write_atomically
from veilfl.protocol.metrics import RoundMetrics

__all__ = [
    "NOT_PROTECTED",
    "RoundMetrics",
    "format_round_fields",
    "format_round_row",
    "format_round_table_header",
    "plot_metrics",
    "render_metrics",
    "round_fields",
    "write_metrics",
]

_COLUMNS = (
    ("round", 5),
    ("clients", 7),
    ("train loss", 10),
    ("test loss", 9),
    ("test acc", 8),
    ("fed acc", 8),
    ("eps public", 10),
    ("eps coord", 9),
    ("acct", 4),
    ("seconds", 7),
)

NOT_PROTECTED = "none"
"""How the table and log lines show the coordinator's epsilon under central noise: DP
is on, but the coordinator sees the noiseless sum, so nothing protects against it."""


def format_round_table_header() -> str:
    """The per-round table's header: the column names and a rule under them (two lines).

    The columns are ``round  clients  train loss  test loss  test acc  fed acc
    eps public  eps coord  acct  seconds`` (``fed acc``: the federated evaluation's
    accuracy, of the model the round started from, on the clients' own evaluation
    splits; epsilon against the public and against the coordinator, and the
    accounting, RDP or PLD, that computed them), right-aligned to the widths
    :func:`format_round_row` uses.
    """
    head = "  ".join(f"{name:>{width}}" for name, width in _COLUMNS)
    return f"{head}\n{'-' * len(head)}"


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_round_row(metrics: RoundMetrics) -> str:
    """One line of the per-round table, aligned with :func:`format_round_table_header`.

    Losses have 4 decimals, accuracy is a percentage with 2, epsilons have 3 and seconds
    1; a missing value shows as ``-``, and the coordinator's epsilon under central noise
    (not protected against) as ``none``.
    """
    cells = (
        str(metrics.round_id),
        str(metrics.num_clients),
        _number(metrics.train_loss, ".4f"),
        _number(metrics.test_loss, ".4f"),
        _percent(metrics.test_accuracy),
        _percent(metrics.federated_accuracy),
        _number(metrics.epsilon, ".3f"),
        _coordinator_epsilon(metrics, ".3f"),
        metrics.accounting or "-",
        _number(metrics.seconds, ".1f"),
    )
    return "  ".join(f"{cell:>{width}}" for cell, (_, width) in zip(cells, _COLUMNS, strict=True))


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.2f}%"


def _coordinator_epsilon(metrics: RoundMetrics, spec: str) -> str:
    if metrics.epsilon is not None and metrics.epsilon_coordinator is None:
        return NOT_PROTECTED
    return _number(metrics.epsilon_coordinator, spec)


def round_fields(metrics: RoundMetrics) -> dict[str, float | int | str | None]:
    """A round's metrics as named fields (for structured log lines): ``round``,
    ``clients``, ``train_loss``, ``test_loss``, ``test_accuracy`` (a fraction),
    ``federated_loss``, ``federated_accuracy`` and ``federated_examples`` (federated
    evaluation), ``epsilon`` (against the public), ``epsilon_coordinator``,
    ``accounting``, ``delta`` and ``seconds``; missing or non-finite values are None."""
    values: dict[str, float | int | str | None] = {
        "round": metrics.round_id,
        "clients": metrics.num_clients,
        "train_loss": metrics.train_loss,
        "test_loss": metrics.test_loss,
        "test_accuracy": metrics.test_accuracy,
        "federated_loss": metrics.federated_loss,
        "federated_accuracy": metrics.federated_accuracy,
        "federated_examples": metrics.federated_examples,
        "epsilon": metrics.epsilon,
        "epsilon_coordinator": metrics.epsilon_coordinator,
        "accounting": metrics.accounting,
        "delta": metrics.delta,
        "seconds": metrics.seconds,
    }
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()
    }


def format_round_fields(metrics: RoundMetrics) -> str:
    """A round's metrics as ``key=value`` pairs for a log line, e.g.
    ``round=1 clients=2 train_loss=0.4879 test_loss=0.2301 test_accuracy=0.9312
    epsilon=1.204 epsilon_coordinator=none accounting=rdp delta=1e-05 seconds=3.2``
    (4 decimals for losses and accuracy, 3 for epsilons, 1 for seconds; ``-`` for a
    missing value, ``none`` for the coordinator's epsilon under central noise)."""
    specs = {
        "train_loss": ".4f",
        "test_loss": ".4f",
        "test_accuracy": ".4f",
        "federated_loss": ".4f",
        "federated_accuracy": ".4f",
        "federated_examples": ".0f",
        "epsilon": ".3f",
        "delta": ".3g",
    }
    parts = []
    for key, value in round_fields(metrics).items():
        if key == "epsilon_coordinator":
            text = _coordinator_epsilon(metrics, ".3f")
        elif value is None:
            text = "-"
        elif key in specs:
            text = format(value, specs[key])
        elif key == "seconds":
            text = f"{value:.1f}"
        else:
            text = str(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _finite_or_none(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_metrics(run_dir: Path, metrics: Sequence[RoundMetrics]) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``metrics.csv`` into ``run_dir``, each atomically.

    Args:
        run_dir: The run folder (created if missing).
        metrics: Every round so far, in order.

    Returns:
        The paths of the JSON and the CSV file.

    Raises:
        StorageError: if a file cannot be written.
    """
    rows = [asdict(m) for m in metrics]
    json_path = run_dir / "metrics.json"
    csv_path = run_dir / "metrics.csv"
    json_rows = [{key: _finite_or_none(value) for key, value in row.items()} for row in rows]
    write_atomically(json_path, json.dumps(json_rows, indent=2, allow_nan=False).encode())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(RoundMetrics)])
    writer.writeheader()
    writer.writerows({**row, "excluded": " ".join(row["excluded"])} for row in rows)
    write_atomically(csv_path, buffer.getvalue().encode())
    return json_path, csv_path


def plot_metrics(run_dir: Path, metrics: Sequence[RoundMetrics], *, title: str) -> Path:
    """Write :func:`render_metrics` to ``metrics.png`` in ``run_dir``.

    Args:
        run_dir: The run folder (created if missing).
        metrics: Every round so far, in order; missing values leave gaps.
        title: The figure's title.

    Returns:
        The path of the PNG file.

    Raises:
        StorageError: if the file cannot be written.
    """
    path = run_dir / "metrics.png"
    write_atomically(path, render_metrics(metrics, title=title))
    return path


def render_metrics(metrics: Sequence[RoundMetrics], *, title: str) -> bytes:
    """A PNG of test accuracy, losses and (when present) epsilon per round: against the
    public and, where it is protected against, the coordinator. Federated accuracy and
    loss, where clients evaluate, are drawn at the round whose model they measured
    (one before the round that reported them)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with_epsilon = any(m.epsilon is not None for m in metrics)
    panels = 3 if with_epsilon else 2
    figure = Figure(figsize=(4.2 * panels, 3.6), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels)

    def series(values: Sequence[float | None]) -> tuple[list[int], list[float]]:
        """The rounds that have a value, and those values (so gaps do not break lines)."""
        kept = [(m.round_id, v) for m, v in zip(metrics, values, strict=True) if v is not None]
        return [r for r, _ in kept], [v for _, v in kept]

    def started_from(values: Sequence[float | None]) -> tuple[list[int], list[float]]:
        """Federated metrics, at the round whose model they measured (one earlier)."""
        rounds, kept = series(values)
        return [r - 1 for r in rounds], kept

    federated = any(m.federated_accuracy is not None for m in metrics)
    accuracy = [None if m.test_accuracy is None else 100 * m.test_accuracy for m in metrics]
    axes[0].plot(*series(accuracy), marker="o", color="tab:blue", label="test")
    if federated:
        axes[0].plot(
            *started_from(
                [
                    None if m.federated_accuracy is None else 100 * m.federated_accuracy
                    for m in metrics
                ]
            ),
            marker="^",
            color="tab:green",
            label="federated (clients' data)",
        )
        axes[0].legend()
    axes[0].set(title="accuracy" if federated else "test accuracy", xlabel="round", ylabel="%")
    axes[0].grid(alpha=0.3)
    axes[1].plot(*series([m.train_loss for m in metrics]), marker="o", label="train (clients)")
    axes[1].plot(*series([m.test_loss for m in metrics]), marker="s", label="test")
    if federated:
        axes[1].plot(
            *started_from([m.federated_loss for m in metrics]), marker="^", label="federated"
        )
    axes[1].set(title="loss", xlabel="round")
    axes[1].legend()
    axes[1].grid(alpha=0.3)
    if with_epsilon:
        axes[2].plot(
            *series([m.epsilon for m in metrics]), marker="o", color="tab:red", label="public"
        )
        if any(m.epsilon_coordinator is not None for m in metrics):
            axes[2].plot(
                *series([m.epsilon_coordinator for m in metrics]),
                marker="s",
                color="tab:purple",
                label="coordinator",
            )
        accounting = next((m.accounting for m in reversed(metrics) if m.accounting), None)
        title = "privacy spent" + (f" ({accounting.upper()})" if accounting else "")
        axes[2].set(title=title, xlabel="round", ylabel="epsilon")
        axes[2].legend()
        axes[2].grid(alpha=0.3)
    for axis in axes:
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
