"""``veilfl client``'s security policy: the flags, the policy file (flags win), and a
refusal printed as one line with nothing sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from tests.run_descriptions import published
from tests.tiny_coordinator import described

from veilfl.cli import client_cmd
from veilfl.cli.config_file import expand_config
from veilfl.cli.data_options import ClientData
from veilfl.cli.main import build_parser, main
from veilfl.cli.policy_options import policy_from_args
from veilfl.crypto.keys import generate_keypair
from veilfl.errors import ConfigurationError
from veilfl.ml.datasets import synthetic_dataset
from veilfl.ml.learner import mnist_learner
from veilfl.ml.local_data import LocalData
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.tensors import spec_of

CLIENT = ["client", "--server", "https://h", "--client-index", "0"]


def _policy(argv: list[str]) -> ClientPolicy:
    parser = build_parser()
    return policy_from_args(parser.parse_args(expand_config(parser, [*CLIENT, *argv])))


def test_defaults_require_secure_aggregation_with_t_and_cohort_at_least_2() -> None:
    assert _policy([]) == ClientPolicy()
    assert ClientPolicy() == ClientPolicy(
        allow_plaintext=False, min_threshold=2, min_cohort=2, staleness_weights=(0.0, 1.0)
    )


def test_every_flag_sets_its_setting() -> None:
    policy = _policy(
        [
            *("--aggregator-fingerprint", "aa", "--aggregator-fingerprint", "bb"),
            *("--min-threshold", "2", "--min-cohort", "5"),
            *("--require-dp", "distributed", "--require-dp", "local"),
            *("--min-noise-multiplier", "1.5", "--max-clip-norm", "0.5"),
            *("--fedbuff-weights", "0.25,1"),
        ]
    )
    assert policy == ClientPolicy(
        aggregator_fingerprints={1: "aa", 2: "bb"},
        min_threshold=2,
        min_cohort=5,
        dp_placements=frozenset({"distributed", "local"}),
        min_noise_multiplier=1.5,
        max_clip_norm=0.5,
        staleness_weights=(0.25, 1.0),
    )
    assert _policy(["--allow-plaintext"]).allow_plaintext


def test_a_policy_file_sets_the_policy_and_flags_override_it(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        'aggregator-fingerprint = ["aa", "bb", "cc"]\n'
        "min_cohort = 4\n"
        'require-dp = ["distributed"]\n'
        "min-noise-multiplier = 1.0\n"
        "fedbuff-weights = [0.5, 1.0]\n"
    )
    from_file = _policy(["--policy", str(path)])
    assert from_file.aggregator_fingerprints == {1: "aa", 2: "bb", 3: "cc"}
    assert (from_file.min_cohort, from_file.min_noise_multiplier) == (4, 1.0)
    assert from_file.dp_placements == frozenset({"distributed"})
    assert from_file.staleness_weights == (0.5, 1.0)
    overridden = _policy(["--policy", str(path), "--min-cohort", "7", "--max-clip-norm", "2"])
    assert (overridden.min_cohort, overridden.max_clip_norm) == (7, 2.0)
    assert overridden.aggregator_fingerprints == from_file.aggregator_fingerprints


def test_a_policy_file_with_an_unknown_key_or_a_contradiction_is_one_clear_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("min-cohrt = 3\n")
    with pytest.raises(ConfigurationError, match="unknown key 'min-cohrt'"):
        _policy(["--policy", str(path)])
    path.write_text('aggregator-fingerprint = ["aa"]\n')
    with pytest.raises(ConfigurationError, match="--allow-plaintext contradicts"):
        _policy(["--policy", str(path), "--allow-plaintext"])


class _Coordinator(BaseHTTPRequestHandler):
    """Describes a plaintext run at ``GET /v1/run``; records every request."""

    run: ClassVar[dict[str, Any]] = {}
    seen: ClassVar[list[tuple[str, str]]] = []

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        self.seen.append((self.command, self.path))
        body = json.dumps(self.run if self.path == "/v1/run" else {}).encode()
        self.send_response(200 if self.path == "/v1/run" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def _coordinator(secure: bool) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """A coordinator that describes a run of the small CNN (plaintext, or secure with
    three aggregators) and answers nothing else; what it was asked is recorded."""
    learner = mnist_learner("simple-cnn", seed=0)
    keys = [generate_keypair() for _ in range(3)]
    settings = RunSpec(
        model_name="simple-cnn",
        rounds=RoundConfig(num_rounds=1, clients_per_round=1),
        plan=LocalTrainingPlan(max_batches=1),
        secure=(
            SecureSettings(config=SecureAggregationConfig(), aggregators=published(keys))
            if secure
            else None
        ),
    )
    spec = spec_of(learner.initial_weights(seed=0))
    run = described(settings, model_size=spec.total_size)
    seen: list[tuple[str, str]] = []
    handler = type("Handler", (_Coordinator,), {"run": run.to_json(), "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("secure", "says"),
    [
        (False, "Refused by --allow-plaintext:"),
        # The README's client flags pin nothing: a secure run is refused, saying how.
        (True, "pinned no aggregator keys, so the coordinator could publish keys it holds"),
    ],
    ids=["plaintext", "unpinned-secure"],
)
def test_a_client_refuses_in_one_line_and_sends_nothing(
    secure: bool,
    says: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = ClientData(LocalData(synthetic_dataset(num_examples=8, seed=0)), "synthetic", "d")
    monkeypatch.setattr(client_cmd, "client_data", lambda args, learner, model_name: data)
    with _coordinator(secure=secure) as (url, seen):
        argv = ["client", "--server", url, "--insecure", "--client-index", "0"]
        assert main([*argv, "--log-level", "error"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("veilfl: error: ") and says in lines[0]
    assert lines[0].endswith("nothing was sent.")
    assert seen == [("GET", "/v1/run")]  # no enrollment, no policy fetch, no update
