"""Checks of the parsed command line that run before any slow work (loading MNIST,
building a model, starting a server), so a typo costs a moment, not a minute.

Each failure is one :class:`~veilfl.errors.ConfigurationError` line naming the flag:
numbers out of range (``--rounds must be at least 1; got -3.``), URLs that are not
``http://`` or ``https://`` (``htps://``), input files that do not exist, and output
folders that cannot be created (``--run-dir /proc/nonexistent/r``).
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from veilfl.errors import ConfigurationError
from veilfl.tracking import check_sinks

__all__ = ["check_arguments"]


@dataclass(frozen=True)
class _Range:
    """A number's allowed range; ``None`` bounds are open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, value: float) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        low_bad = self.low is not None and (
            value < self.low or (self.low_open and value == self.low)
        )
        high_bad = self.high is not None and (
            value > self.high or (self.high_open and value == self.high)
        )
        if not (low_bad or high_bad):
            return None
        if self.high is None:
            assert self.low is not None
            return f"must be {'more than' if self.low_open else 'at least'} {_num(self.low)}"
        if self.low is None:
            return f"must be {'less than' if self.high_open else 'at most'} {_num(self.high)}"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"must lie in {left}{_num(self.low)}, {_num(self.high)}{right}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


AT_LEAST_1 = _Range(low=1)
AT_LEAST_0 = _Range(low=0)
POSITIVE = _Range(low=0, low_open=True)
FRACTION = _Range(low=0, high=1, low_open=True)
PROBABILITY = _Range(low=0, high=1, high_open=True)

_RANGES: dict[str, _Range] = {
    **dict.fromkeys(
        (
            "rounds",
            "epochs",
            "batch_size",
            "clients_per_round",
            "min_clients",
            "min_available",
            "num_clients",
            "clients",
            "aggregators",
            "threshold",
            "buffer_size",
            "max_concurrency",
            "max_samples_per_client",
            "examples_per_client",
            "image_size",
            "max_batches",
            "count",
            "threads",
            "ray_workers",
            "batch_clients",
            "index",
            "min_participants",
            "dp_min_clients",
            "min_threshold",
            "min_cohort",
            "quorum",
        ),
        AT_LEAST_1,
    ),
    **dict.fromkeys(
        (
            "client_index",
            "test_examples",
            "max_staleness",
            "linger",
            "slowdown",
            "slow_clients",
            "speed_sigma",
            "noise_multiplier",
            "dp_sgd_noise",
            "rate_limit",
            "seed",
            "data_seed",
            "proximal_mu",
            "ray_gpus",
        ),
        AT_LEAST_0,
    ),
    **dict.fromkeys(
        (
            "round_timeout",
            "connect_timeout",
            "lr",
            "server_lr",
            "timeout",
            "max_update_mb",
            "max_share_mb",
            "base_seconds",
            "max_clock_skew",
            "clip_norm",
            "norm_bound",
            "target_epsilon",
            "alpha",
            "dp_sgd_clip",
            "rate_burst",
            "min_noise_multiplier",
            "max_clip_norm",
            "server_tau",
            "ray_cpus",
        ),
        POSITIVE,
    ),
    **dict.fromkeys(("fraction", "fedasync_mixing", "adaptive_clipping"), FRACTION),
    **dict.fromkeys(
        (
            "dropout",
            "eval_fraction",
            "late_fraction",
            "delta",
            "dp_sgd_delta",
            "momentum",
            "server_beta1",
            "server_beta2",
        ),
        PROBABILITY,
    ),
    "port": _Range(low=0, high=65535),
}

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
_URLS = ("server", "coordinator")
_INPUT_FILES = (
    "ca_cert",
    "tls_cert",
    "tls_key",
    "key",
    "enrollment_tokens",
    "allowed_clients",
    "policy",
)
_INPUT_FOLDERS = ("mnist_dir",)
_OUTPUT_FOLDERS = ("run_dir", "spool")
_OUTPUT_FOLDER_COMMANDS = ("keys", "certs")  # their --out is a folder
_OUTPUT_FILE_COMMANDS = ("tokens", "identity", "export")  # their --out is a file


def check_arguments(args: argparse.Namespace) -> None:
    """Check the parsed options of any command.

    Output folders (``--run-dir``, ``--spool``, ``--out`` of keys and certs) are
    created here, so an unwritable place is reported at once.

    Raises:
        ConfigurationError: naming the first flag that is wrong.
    """
    values = vars(args)
    for dest, allowed in _RANGES.items():
        value = values.get(dest)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        problem = allowed.problem(value)
        if problem is not None:
            raise ConfigurationError(f"{_flag(dest)} {problem}; got {_num(value)}.")
    for dest in _URLS:
        if isinstance(values.get(dest), str):
            _check_url(_flag(dest), values[dest])
    for spec in values.get("aggregator") or []:
        if isinstance(spec, str):
            url, _, key_file = spec.partition(",")
            if not url or not key_file:
                raise ConfigurationError(f"--aggregator takes URL,PUBLIC_KEY_FILE; got {spec!r}.")
            _check_url("--aggregator", url)
            _check_input(Path(key_file), "--aggregator", folder=False)
    for dest in _INPUT_FILES:
        if isinstance(values.get(dest), Path):
            _check_input(values[dest], _flag(dest), folder=False)
    for dest in _INPUT_FOLDERS:
        if isinstance(values.get(dest), Path):
            _check_input(values[dest], _flag(dest), folder=True)
    check_sinks(values.get("metrics_sink") or [])  # unknown, or its extra not installed
    _check_relations(values)
    command = values.get("command")
    outputs = [d for d in _OUTPUT_FOLDERS if isinstance(values.get(d), Path)]
    for dest in outputs:
        _make_folder(values[dest], _flag(dest))
    out = values.get("out")
    if isinstance(out, Path) and command in _OUTPUT_FOLDER_COMMANDS:
        _make_folder(out, "--out")
    if isinstance(out, Path) and command in _OUTPUT_FILE_COMMANDS:
        if out.is_dir():
            raise ConfigurationError(f"--out {out} is a folder; name a file.")
        _make_folder(out.parent, "--out", shown=out)
    identity = values.get("identity")
    if isinstance(identity, Path) and not identity.exists():
        _make_folder(identity.parent, "--identity", shown=identity)


def _check_relations(values: dict[str, object]) -> None:
    index, clients = values.get("client_index"), values.get("num_clients")
    if isinstance(index, int) and isinstance(clients, int) and index >= clients:
        raise ConfigurationError(
            f"--client-index {index} is outside 0..{clients - 1} (--num-clients {clients} "
            "decides the partitions)."
        )
    per_round, fraction = values.get("clients_per_round"), values.get("fraction")
    if per_round is not None and fraction is not None:
        raise ConfigurationError(
            "Give --clients-per-round (a count) or --fraction (of joined clients), not both."
        )
    least = values.get("min_clients")
    if isinstance(least, int) and isinstance(per_round, int) and least > per_round:
        raise ConfigurationError(
            f"--min-clients {least} is more than --clients-per-round {per_round}: the round "
            "could never close."
        )
    listed = values.get("aggregator")
    threshold = values.get("threshold")
    if (
        isinstance(listed, list)
        and listed
        and isinstance(threshold, int)
        and threshold > len(listed)
    ):
        raise ConfigurationError(
            f"--threshold {threshold} is more than the {len(listed)} --aggregator given; "
            "at most that many shares exist."
        )
    device = values.get("device")
    if isinstance(device, str) and not _DEVICE.fullmatch(device.strip().lower()):
        raise ConfigurationError(
            f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N (N from 0)."
        )
    backend = values.get("backend")
    if backend is not None and backend != "ray":
        for flag in ("ray_address", "ray_workers"):
            if values.get(flag) is not None:
                raise ConfigurationError(f"{_flag(flag)} needs --backend ray.")
        if values.get("ray_gpus"):
            raise ConfigurationError("--ray-gpus needs --backend ray.")
    aggregators = values.get("aggregators")
    if (
        isinstance(threshold, int)
        and isinstance(aggregators, int)
        and values.get("command") in ("simulate", "demo")
        and threshold > aggregators
    ):
        raise ConfigurationError(
            f"--threshold {threshold} is more than --aggregators {aggregators}; at most "
            "that many shares exist."
        )
    _check_quorum(values, threshold=threshold, aggregators=aggregators, listed=listed)


def _check_quorum(
    values: dict[str, object], *, threshold: object, aggregators: object, listed: object
) -> None:
    """A ``--quorum`` out of range, or one that lets certificates split without
    ``--allow-split-certificates``, is refused here with the very check the run's
    settings make (:class:`~veilfl.secagg.config.SecureAggregationConfig`)."""
    from veilfl.secagg.config import SecureAggregationConfig

    quorum = values.get("quorum")
    if quorum is None or not isinstance(threshold, int):
        return
    m = len(listed) if isinstance(listed, list) and listed else aggregators
    if values.get("command") == "server" and not listed:
        return  # plaintext: no certificates
    if not isinstance(m, int) or not 1 <= threshold <= m:
        return  # reported above, or by the run's settings
    assert isinstance(quorum, int)
    SecureAggregationConfig(
        threshold=threshold,
        num_aggregators=m,
        quorum=quorum,
        allow_split_certificates=bool(values.get("allow_split_certificates")),
    )


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _check_url(flag: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as exc:
        raise ConfigurationError(f"{flag} {url} is not a valid URL ({exc}).") from None
    if parts.scheme not in ("http", "https"):
        hint = "https://" if parts.scheme.endswith("s") or not parts.scheme else "http://"
        raise ConfigurationError(
            f"{flag} {url} is not an http:// or https:// URL; did you mean {hint}?"
        )
    if not parts.hostname:
        raise ConfigurationError(f"{flag} {url} names no host, as in https://127.0.0.1:8080.")


def _check_input(path: Path, flag: str, *, folder: bool) -> None:
    try:
        if not path.exists():
            raise ConfigurationError(f"{flag} {path} does not exist.")
        if folder and not path.is_dir():
            raise ConfigurationError(f"{flag} {path} is not a folder.")
        if not folder and path.is_dir():
            raise ConfigurationError(f"{flag} {path} is a folder, not a file.")
    except OSError as exc:
        raise ConfigurationError(f"{flag} {path} cannot be read: {exc.strerror}.") from None


def _make_folder(path: Path, flag: str, *, shown: Path | None = None) -> None:
    shown = shown or path
    try:
        if path.exists() and not path.is_dir():
            raise ConfigurationError(f"{flag} {shown}: {path} is a file, not a folder.")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        raise ConfigurationError(
            f"{flag} {shown} cannot be created: {exc.strerror}{where}; choose a writable folder."
        ) from None
