"""``--learner MODULE:ATTRIBUTE``: the user's own model on the command line.

The attribute is a :class:`~veilfl.ml.learner.Learner`, or a function returning one
(called with ``seed=`` when it takes a ``seed`` parameter, else with no arguments).
The module is imported with the current folder on ``sys.path``, as ``python -m`` would.
The data the commands hand the learner is what ``--data`` names, read by veilfl's data
sources (:mod:`veilfl.ml.data_sources`; MNIST's partition of ``--num-clients`` by
default) as an :class:`~veilfl.ml.datasets.ArrayDataset`; a module that defines
``load_data(path) -> LocalData`` (or a learner with ``load_data`` set) reads it itself.

The run's settings record the spec (``model_name``), so every party builds the same
model and a restart with another one is refused.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from typing import TYPE_CHECKING, Any

from veilfl.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

    from veilfl.ml.datasets import ArrayDataset
    from veilfl.ml.learner import Learner
    from veilfl.ml.training import TrainProgress

__all__ = [
    "add_learner_option",
    "is_learner_spec",
    "learner_for",
    "load_learner",
    "model_name_from_args",
]


def add_learner_option(parser: argparse.ArgumentParser) -> None:
    """``--learner MODULE:ATTRIBUTE`` (overrides ``--model``)."""
    parser.add_argument(
        "--learner",
        default=None,
        metavar="MODULE:ATTRIBUTE",
        help="your own model: a veilfl.Learner, or a function returning one, imported from "
        "MODULE (the current folder is searched first); overrides --model",
    )


def is_learner_spec(name: str) -> bool:
    """Whether a run's model name is a ``--learner`` spec (not a built-in model)."""
    return ":" in name


def model_name_from_args(args: argparse.Namespace) -> str:
    """What the run records as its model: the ``--learner`` spec, else ``--model``."""
    learner = getattr(args, "learner", None)
    return str(learner) if learner else str(args.model)


def load_learner(spec: str, *, seed: int | None = None) -> Learner[ArrayDataset]:
    """Import the learner that ``spec`` (``package.module:attribute``) names.

    Args:
        spec: ``MODULE:ATTRIBUTE``; the attribute may be dotted (``module:Class.make``).
        seed: Passed to a factory that takes a ``seed`` parameter.

    Raises:
        ConfigurationError: in one line, if the spec is malformed, the module does not
            import, the attribute is missing, or it is neither a Learner nor a function
            returning one.
    """
    from veilfl.ml.learner import Learner

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute or ":" in attribute:
        raise ConfigurationError(
            f"--learner takes MODULE:ATTRIBUTE, such as my_project.learner:learner; got {spec!r}."
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ConfigurationError(
                f"--learner {spec}: there is no module {module_name!r}; run from the folder "
                "that holds it, or install its package."
            ) from None
        raise ConfigurationError(
            f"--learner {spec}: importing {module_name} failed: {_one_line(exc)}."
        ) from None
    except Exception as exc:
        raise ConfigurationError(
            f"--learner {spec}: importing {module_name} failed: {_one_line(exc)}."
        ) from None
    value: Any = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise ConfigurationError(
                f"--learner {spec}: module {module_name} has no attribute {attribute!r}."
            )
        value = getattr(value, part)
    if isinstance(value, Learner):
        return _with_module_loader(value, module)
    if not callable(value):
        raise ConfigurationError(
            f"--learner {spec}: {attribute} is a {type(value).__name__}, not a veilfl.Learner "
            "or a function returning one."
        )
    try:
        takes_seed = "seed" in inspect.signature(value).parameters
    except (TypeError, ValueError):
        takes_seed = False
    try:
        made = value(seed=seed) if takes_seed else value()
    except Exception as exc:
        raise ConfigurationError(
            f"--learner {spec}: calling {attribute}() failed: {_one_line(exc)}."
        ) from None
    if not isinstance(made, Learner):
        raise ConfigurationError(
            f"--learner {spec}: {attribute}() returned a {type(made).__name__}, not a "
            "veilfl.Learner."
        )
    return _with_module_loader(made, module)


def _with_module_loader(learner: Learner[ArrayDataset], module: Any) -> Learner[ArrayDataset]:
    """The learner, reading ``--data`` with its module's ``load_data(path)`` if it has
    one and the learner sets none."""
    import dataclasses

    loader = getattr(module, "load_data", None)
    if learner.load_data is not None or not callable(loader):
        return learner
    return dataclasses.replace(learner, load_data=loader)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def learner_for(
    model_name: str,
    *,
    seed: int | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    device: str | None = None,
) -> Learner[ArrayDataset]:
    """The learner a run's model name stands for: a ``--learner`` spec is imported, a
    built-in name (``simple-cnn``, ``mnist-cnn``) gets :func:`~veilfl.ml.learner.mnist_learner`
    (which reports ``progress``). Either is placed on ``device`` (``--device``) when
    given.

    Raises:
        ConfigurationError: for a spec that does not load, or a device torch does not
            have (say ``cuda`` with a CPU-only torch).
    """
    if is_learner_spec(model_name):
        learner = load_learner(model_name, seed=seed)
        return learner if device is None else learner.on(device)
    from veilfl.ml.learner import mnist_learner

    return mnist_learner(model_name, seed=seed, progress=progress, device=device or "cpu")
