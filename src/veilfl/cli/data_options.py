"""``--data``, ``--eval-data`` and how to read them, on the command line.

The options are derived from :class:`~veilfl.ml.data_sources.DataSettings`'s
declarations (so ``veilfl.toml`` takes the same keys). This module turns them into
what each command needs:

* ``veilfl client``: this client's :class:`~veilfl.ml.local_data.LocalData`
  (:func:`client_data`): its own files, or, with ``--client-index``, its part of a
  shared data set (MNIST by default);
* ``veilfl simulate``: every virtual client's part of one data set
  (:func:`simulated_clients`), split with ``--partition``;
* ``veilfl server`` and ``simulate``: the server-side evaluation data, or none
  (:func:`server_evaluation_data`).

Each checks at once that the model takes the data (one line naming both shapes).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from veilfl.cli.learner_option import is_learner_spec
from veilfl.cli.run_options import add_declared_options
from veilfl.declared import Declared, build_config, declared_settings
from veilfl.errors import ConfigurationError, VeilflError

if TYPE_CHECKING:
    from veilfl.ml.data_sources import DataSettings, DataSource, PartitionedData
    from veilfl.ml.datasets import ArrayDataset
    from veilfl.ml.learner import Learner
    from veilfl.ml.local_data import LocalData
    from veilfl.ml.partition import IndexArray

__all__ = [
    "ClientData",
    "add_data_source_options",
    "client_data",
    "data_settings_from_args",
    "server_evaluation_data",
    "simulated_clients",
]

logger = logging.getLogger("veilfl")


def _declared() -> list[Declared]:
    from veilfl.ml.data_sources.settings import DataSettings

    return declared_settings(DataSettings)


def add_data_source_options(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """``--data``, ``--eval-data``, ``--eval-fraction``, ``--label-column``,
    ``--image-size`` and ``--image-mode`` (less those in ``skip``, by name)."""
    add_declared_options(parser, _declared(), skip=skip)


def data_settings_from_args(args: argparse.Namespace) -> DataSettings:
    """The data settings the options give (those a command lacks take their default)."""
    from veilfl.ml.data_sources.settings import DataSettings

    values = {
        d.path: getattr(args, str(d.setting.dest))
        for d in _declared()
        if hasattr(args, str(d.setting.dest))
    }
    return build_config(DataSettings, values)


@dataclass(frozen=True)
class ClientData:
    """What ``veilfl client`` trains and evaluates on.

    Attributes:
        local: Its training and evaluation splits.
        description: Names the data in log lines.
        digest: The data set's identity (:func:`~veilfl.ml.data_sources.data_set_digest`
            of every example it read, both splits; for a learner's ``load_data`` that
            returns its own data type, SHA-256 of the resolved path), which keys its
            participation record.
    """

    local: LocalData[ArrayDataset]
    description: str
    digest: str


def client_data(
    args: argparse.Namespace, learner: Learner[ArrayDataset], *, model_name: str
) -> ClientData:
    """This client's data: what ``--data`` names (default MNIST), whole, or with
    ``--client-index`` its part of ``--num-clients`` (``--partition``), with
    ``--eval-fraction`` held out for evaluation.

    Raises:
        ConfigurationError: without ``--data`` or ``--client-index``, or if the model
            does not take the data (one line naming both shapes).
        DataError: if the data cannot be read.
    """
    from veilfl.ml.data_sources import data_set_digest
    from veilfl.ml.datasets import ArrayDataset
    from veilfl.ml.local_data import hold_out

    settings = data_settings_from_args(args)
    index = args.client_index
    if settings.data is None and index is None:
        raise ConfigurationError(
            "veilfl client needs --data with this client's own files, or --client-index "
            "to pick its part of MNIST."
        )
    if settings.data is not None and learner.load_data is not None:
        if index is not None:
            raise ConfigurationError(
                "--client-index picks a part of a shared data set; the learner's load_data "
                "reads this client's own --data: drop --client-index."
            )
        local = learner.load_data(settings.data)
        train: object = local.train  # a --learner may hold any data type
        if not isinstance(train, ArrayDataset):
            # Named by its resolved path: veilfl cannot read the examples themselves.
            path = str(Path(settings.data).expanduser().resolve())
            return ClientData(local, settings.data, hashlib.sha256(path.encode()).hexdigest())
        held = local.evaluation
        whole = local.train if held is None else local.train.concat(held)
        _check(learner, local.train, f"--data {settings.data}", model_name)
        return ClientData(local, settings.data, data_set_digest(whole))
    source = _source(args, settings.data, settings)
    data = source.load()
    description = source.description
    if index is not None:
        if not 0 <= index < args.num_clients:
            raise ConfigurationError(f"Client index {index} is outside 0..{args.num_clients - 1}.")
        part = _parts(args, data)[index]
        data = data.subset(part)
        description = f"part {index} of {args.num_clients} of {source.description}"
    _check(learner, data, _name(settings.data), model_name)
    fraction = _fraction(settings, source)
    local = hold_out(data, fraction=fraction, seed=args.data_seed)
    return ClientData(local, description, data_set_digest(data))


def simulated_clients(
    args: argparse.Namespace, learner: Learner[ArrayDataset], *, model_name: str
) -> PartitionedData:
    """Every virtual client's part of what ``--data`` names (default MNIST's training
    set), split with ``--partition`` over ``--num-clients`` and capped at
    ``--examples-per-client``, each with ``--eval-fraction`` held out.

    Raises:
        ConfigurationError: if the model does not take the data (one line).
        DataError: if the data cannot be read or partitioned.
    """
    from veilfl.ml.data_sources import partitioned_local_data
    from veilfl.ml.datasets import ArrayDataset

    settings = data_settings_from_args(args)
    if settings.data is not None and learner.load_data is not None:
        loaded: object = learner.load_data(settings.data).train
        if not isinstance(loaded, ArrayDataset):
            raise ConfigurationError(
                f"veilfl simulate splits a veilfl.ArrayDataset, but the learner's load_data "
                f"gives a {type(loaded).__name__}; call veilfl.simulate from Python with "
                "each client's data instead."
            )
        data = loaded
        fraction = settings.eval_fraction or 0.0
    else:
        source = _source(args, settings.data, settings)
        data = source.load()
        fraction = _fraction(settings, source)
    _check(learner, data, _name(settings.data), model_name)
    parts = _parts(args, data)
    return partitioned_local_data(data, parts, eval_fraction=fraction, seed=args.data_seed)


def server_evaluation_data(
    args: argparse.Namespace, learner: Learner[ArrayDataset], *, model_name: str
) -> ArrayDataset | None:
    """What the coordinator evaluates each round's model on: ``--eval-data`` (whole;
    through the learner's ``load_data`` when it has one: its evaluation split, else
    all of it); else MNIST's test set when the run trains on MNIST and the model takes
    MNIST images; else nothing. ``--test-examples`` caps it; 0 turns evaluation off.

    Raises:
        ConfigurationError: if the model does not take ``--eval-data`` (one line).
        DataError: if ``--eval-data`` cannot be read.
    """
    from veilfl.ml.data_sources import MnistSource
    from veilfl.ml.datasets import ArrayDataset

    settings = data_settings_from_args(args)
    cap = args.test_examples
    if cap == 0:
        logger.info("no server-side evaluation (--test-examples 0)")
        return None
    if settings.eval_data is not None:
        if learner.load_data is not None:
            local = learner.load_data(settings.eval_data)
            data = local.evaluation if local.evaluation is not None else local.train
            if not isinstance(cast(object, data), ArrayDataset):
                return data  # the learner's own data type: evaluated whole, unchecked
        else:
            data = _source(args, settings.eval_data, settings).load()
        _check(learner, data, f"--eval-data {settings.eval_data}", model_name)
        return _capped(data, cap)
    trains_on = None if settings.data is None else _source(args, settings.data, settings)
    if trains_on is not None and not isinstance(trains_on, MnistSource):
        logger.info("no server-side evaluation: give --eval-data to evaluate on the server")
        return None
    folder = getattr(trains_on, "folder", None) or getattr(args, "mnist_dir", None)
    mnist = MnistSource(folder=folder, split="test")
    if learner.load_data is None and not is_learner_spec(model_name):
        return _capped(mnist.load(), cap)  # a built-in MNIST model: as before
    try:
        data = _capped(mnist.load(), cap)
        _check(learner, data, "MNIST", model_name)
    except VeilflError as exc:
        logger.info(
            "no server-side evaluation: %s Give --eval-data to evaluate on the server.", exc
        )
        return None
    return data


def _source(args: argparse.Namespace, spec: str | None, settings: DataSettings) -> DataSource:
    from veilfl.ml.data_sources import data_source

    return data_source(spec or "mnist", settings, mnist_dir=getattr(args, "mnist_dir", None))


def _fraction(settings: DataSettings, source: DataSource) -> float:
    if settings.eval_fraction is not None:
        return settings.eval_fraction
    return source.default_eval_fraction


def _name(spec: str | None) -> str:
    return "MNIST" if spec is None else f"--data {spec}"


def _parts(args: argparse.Namespace, data: ArrayDataset) -> list[IndexArray]:
    from veilfl.ml.partition import partition

    parts = partition(
        args.partition, data.labels, args.num_clients, seed=args.data_seed, alpha=args.alpha
    )
    cap = args.examples_per_client
    return [p if cap is None else p[:cap] for p in parts]


def _capped(data: ArrayDataset, cap: int | None) -> ArrayDataset:
    if cap is not None and cap < len(data):
        return data.subset(list(range(cap)))
    return data


def _check(learner: Learner[ArrayDataset], data: ArrayDataset, data_name: str, model: str) -> None:
    from veilfl.ml.data_check import check_model_takes

    check_model_takes(learner.model_fn, data, data_name=data_name, model_name=model)
