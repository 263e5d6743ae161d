"""``veilfl new NAME``: a small project that federates its own model.

It writes ``NAME/`` holding a package with the learner (``NAME/learner.py``: the model
and how it trains), ``veilfl.toml`` (the options of ``simulate`` and ``demo``) and a
README with the commands that run it. Nothing is overwritten.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from veilfl.errors import ConfigurationError

__all__ = ["add_parser", "create_project", "run"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")

_LEARNER = '''"""The model {package} federates, and how each client trains it.

Every party imports this module: the coordinator (to build the first model and to
evaluate each new one) and every client (to train). Clients get their own part of
MNIST as a veilfl.ml.ArrayDataset of (N, 1, 28, 28) float32 images and int64 labels,
or what --data names (a CSV or Parquet table, a folder of class sub-folders); to read
another format, define load_data(path) here, returning a veilfl.LocalData.
"""

import torch
from torch import nn

from veilfl import Learner
from veilfl.ml import ArrayDataset, sgd_learner


class Net(nn.Module):
    """A small multilayer perceptron: 784 -> 128 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(), nn.Linear(28 * 28, 128), nn.ReLU(), nn.Linear(128, 10)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.layers(images)
        return logits


def learner(seed: int | None = None) -> Learner[ArrayDataset]:
    """Plain local SGD with the coordinator's plan; write your own train_fn and
    evaluate_fn with veilfl.Learner(model_fn=..., train_fn=..., evaluate_fn=...)."""
    return sgd_learner(Net, seed=seed)
'''

_CONFIG = """# Options of veilfl commands run with --config veilfl.toml (flags override them).
# Keys are each command's long options without the dashes; see veilfl COMMAND --help.

[simulate]
learner = "{package}.learner:learner"
# data = "my_table.csv"   # your own data (a table, an image folder); default: MNIST
num-clients = 10
fraction = 0.5
rounds = 5
examples-per-client = 1000
lr = 0.1

[demo]
learner = "{package}.learner:learner"
clients = 3
rounds = 3
examples-per-client = 2000
lr = 0.1
"""

_README = """# {name}

A federated-learning project made with `veilfl new`. The model is in
`{package}/learner.py`; the options are in `veilfl.toml`.

Simulate 10 clients in one process (a few seconds):

```bash
veilfl simulate --config veilfl.toml
```

Run a coordinator, three aggregators and three client processes on this machine,
with TLS and secure aggregation:

```bash
veilfl demo --config veilfl.toml
```

Run either from this folder, so that `{package}` imports. Flags override the file,
for example `veilfl simulate --config veilfl.toml --rounds 20`. To run a coordinator
and clients on several machines, pass the same `--learner {package}.learner:learner`
to `veilfl server` and to every `veilfl client`.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``veilfl new``."""
    parser = subparsers.add_parser("new", help="start a project that federates your own model")
    parser.add_argument("name", help="the project's folder (letters, digits, - and _)")
    parser.set_defaults(func=run)


def create_project(folder: Path) -> list[Path]:
    """Write the project into ``folder`` (which must not exist); return the files.

    Raises:
        ConfigurationError: if the name is not usable or the folder exists.
    """
    name = folder.name
    if not _NAME.match(name):
        raise ConfigurationError(
            f"{name!r} cannot name a project: use letters, digits, - and _, starting with a letter."
        )
    if folder.exists():
        raise ConfigurationError(f"{folder} exists already; choose a new name.")
    package = name.replace("-", "_").lower()
    files = {
        folder / package / "__init__.py": f'"""The {name} project."""\n',
        folder / package / "learner.py": _LEARNER.format(package=package),
        folder / "veilfl.toml": _CONFIG.format(package=package),
        folder / "README.md": _README.format(name=name, package=package),
    }
    try:
        (folder / package).mkdir(parents=True)
        for path, text in files.items():
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{folder} cannot be written: {exc.strerror}.") from None
    return list(files)


def run(args: argparse.Namespace) -> int:
    """Write the project and print the next commands."""
    folder = Path(args.name)
    for path in create_project(folder):
        print(f"wrote {path}")
    print(f"next: cd {folder} && veilfl simulate --config veilfl.toml")
    return 0
