"""How a party names its data: ``--data``, ``--eval-data`` and how to read them,
declared once (:mod:`veilfl.declared`); the command-line options and the keys of
``veilfl.toml`` are derived from these declarations (:mod:`veilfl.cli.data_options`).

These are a party's own settings, not the run's: they never enter the run
description, so every client may name its own files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from veilfl.declared import check_declared, setting

__all__ = ["DEFAULT_EVAL_FRACTION", "DataSettings", "ImageMode"]

ImageMode = Literal["gray", "rgb"]

DEFAULT_EVAL_FRACTION = 0.2
"""The share of a table's or an image folder's examples a client holds out to evaluate
on, unless ``--eval-fraction`` says otherwise (MNIST holds out none: its runs train on
the same examples as before)."""


@dataclass(frozen=True)
class DataSettings:
    """Where a party's data comes from and how it is read.

    Attributes:
        data: What the party trains on: ``mnist`` (or ``mnist:FOLDER`` of IDX files),
            a ``.csv``/``.tsv`` or ``.parquet`` table, a folder of images with one
            sub-folder per class, or ``KIND:PATH`` to name the source (see
            :func:`~veilfl.ml.data_sources.data_source`); None: MNIST.
        eval_data: What the coordinator evaluates each round's model on, read the
            same way; None: no server-side evaluation (MNIST's test set for MNIST).
        eval_fraction: The share of a client's examples held out for evaluation on
            the client (None: the source's default, 0 for MNIST, else
            :data:`DEFAULT_EVAL_FRACTION`).
        label_column: A table's label column, by name (or 0-based number for a table
            without a header); None: the column named ``label``, else the last one.
        image_size: Images are resized to this many pixels a side.
        image_mode: Images are read as one gray channel or three RGB channels.
    """

    data: str | None = setting(
        flag="--data",
        metavar="PATH",
        group="data",
        help="what to train on: mnist (default), a .csv or .parquet table, a folder with "
        "one sub-folder of images per class, or KIND:PATH",
        default=None,
    )
    eval_data: str | None = setting(
        flag="--eval-data",
        metavar="PATH",
        group="data",
        help="what the coordinator evaluates each round's model on, read like --data "
        "(default: MNIST's test set for MNIST models, else none)",
        default=None,
    )
    eval_fraction: float | None = setting(
        flag="--eval-fraction",
        at_least=0.0,
        below=1.0,
        group="data",
        help="share of a client's examples it holds out to evaluate on (default: 0 for "
        f"MNIST, {DEFAULT_EVAL_FRACTION} for tables and images)",
        default=None,
    )
    label_column: str | None = setting(
        flag="--label-column",
        metavar="NAME",
        group="data",
        help="a table's label column (default: the column named label, else the last)",
        default=None,
    )
    image_size: int = setting(
        flag="--image-size",
        at_least=1,
        group="data",
        help="images are resized to this many pixels a side",
        default=28,
    )
    image_mode: ImageMode = setting(
        flag="--image-mode",
        group="data",
        help="read images as one gray channel or three RGB channels",
        default="gray",
    )

    def __post_init__(self) -> None:
        check_declared(self)
