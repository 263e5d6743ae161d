"""A malicious coordinator tries to downgrade the client through the real HTTP code
paths; the client's policy refuses, and no request carrying the update or a share
reaches any server.

Everything runs in process: the real coordinator app and service, three real
aggregator apps, and real clients (``run_client``). The coordinator turns malicious by
rewriting what it answers (the run description, the run returned at enrollment, a
task's privacy plan, a ticket's weight) on its way out.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.in_process_fleet import in_process_fleet
from tests.run_descriptions import published

from veilfl.auth.identity import Identity
from veilfl.client.http_client import RetryPolicy, run_client
from veilfl.client.participation_record import ParticipationRecord, model_digest
from veilfl.crypto.keys import AggregatorKeyPair, generate_keypair
from veilfl.errors import PolicyRefusal
from veilfl.ml.datasets import synthetic_dataset
from veilfl.ml.learner import mnist_learner
from veilfl.privacy.dp_config import DpConfig
from veilfl.protocol.buffered import BufferConfig
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.server.aggregator_link import HttpAggregatorLink
from veilfl.server.service import CoordinatorService

pytestmark = pytest.mark.timeout(120)

START = mnist_learner("simple-cnn", seed=0).initial_weights(seed=0)
KEYS = [generate_keypair() for _ in range(3)]
URLS = [f"http://aggregator-{j}" for j in (1, 2, 3)]
AGGREGATORS = published(KEYS, URLS)
PINS = {a.index: a.fingerprint for a in AGGREGATORS}
CONFIG = SecureAggregationConfig(threshold=2, num_aggregators=3, max_samples_per_client=20)
CARRIES_DATA = re.compile(r"^/v1/rounds/\d+/(shares|updates|receipts)$")
Tamper = Callable[[str, str, Any], Any]


@dataclass
class _Network(httpx.AsyncBaseTransport):
    """Routes requests by host to the in-process apps, records each, and lets the
    coordinator (host ``coordinator``) rewrite its JSON answers with ``tamper(method,
    path, body)``; ``tamper_aggregators`` does the same to the aggregators' answers."""

    apps: dict[str, httpx.ASGITransport] = field(default_factory=dict)
    tamper: Tamper | None = None
    tamper_aggregators: Tamper | None = None
    seen: list[tuple[str, str, str]] = field(default_factory=list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host, method, path = request.url.host, request.method, request.url.path
        self.seen.append((host, method, path))
        response = await self.apps[host].handle_async_request(request)
        tamper = self.tamper if host == "coordinator" else self.tamper_aggregators
        if tamper is None or not response.headers.get("content-type", "").startswith(
            "application/json"
        ):
            return response
        body = await response.aread()
        changed = tamper(method, path, httpx.Response(200, content=body).json())
        return httpx.Response(response.status_code, json=changed)

    def data_requests(self) -> list[tuple[str, str, str]]:
        """Every request that carried an update, a share or a receipt."""
        return [seen for seen in self.seen if CARRIES_DATA.match(seen[2])]

    def enrolled(self) -> bool:
        return ("coordinator", "POST", "/v1/clients") in self.seen


@dataclass
class _Fleet:
    network: _Network
    service: CoordinatorService
    link: HttpAggregatorLink


def _fleet(
    tmp_path: Path,
    *,
    min_participants: int = 2,
    dp: DpConfig | None = None,
    buffer: BufferConfig | None = None,
    keys: list[AggregatorKeyPair] = KEYS,
    identity: Identity | None = None,
) -> _Fleet:
    settings = RunSpec(
        model_name="simple-cnn",
        rounds=RoundConfig(num_rounds=1, clients_per_round=2, min_clients=2, poll_interval_s=0.1),
        plan=LocalTrainingPlan(max_batches=1, batch_size=8),
        secure=SecureSettings(config=CONFIG, aggregators=published(keys, URLS)),
        dp=dp,
        buffer=buffer,
        population=2,
    )
    network = _Network()
    fleet = in_process_fleet(
        settings,
        keys=keys,
        start=START,
        apps=network.apps,
        transport=network,
        spool=tmp_path,
        identity=identity,
        min_participants=min_participants,
    )
    return _Fleet(network, fleet.service, fleet.link)


async def _clients(
    fleet: _Fleet,
    policy: ClientPolicy,
    count: int = 1,
    records: Sequence[ParticipationRecord] | None = None,
) -> None:
    data = synthetic_dataset(num_examples=16, seed=0)
    await fleet.service.start(tick_interval_s=0.02)
    try:
        outcomes = await asyncio.gather(
            *(
                run_client(
                    "http://coordinator",
                    mnist_learner("simple-cnn", seed=i),
                    data,
                    retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.01),
                    transport=fleet.network,
                    policy=policy,
                    record=None if records is None else records[i],
                )
                for i in range(count)
            ),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
    finally:
        await fleet.service.stop()
        await fleet.link.close()


def _on_run(change: Callable[[dict[str, Any]], None]) -> Tamper:
    """Rewrite the run description wherever the coordinator sends it."""

    def tamper(method: str, path: str, body: Any) -> Any:
        if path == "/v1/run":
            _restate(body, change)
        elif path == "/v1/clients" and method == "POST":
            _restate(body["run"], change)
        return body

    return tamper


def _restate(description: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> None:
    """Change the served spec and state its new id, as a malicious coordinator would
    (the aggregators' consents stay those they signed for the honest run)."""
    change(description["spec"])
    description["run_id"] = RunSpec.from_json(description["spec"]).run_id


def _drop_secure(run: dict[str, Any]) -> None:
    run["secure"] = None


def _one_aggregator(run: dict[str, Any]) -> None:
    run["secure"]["config"].update(threshold=1, num_aggregators=1, quorum=1)
    run["secure"]["aggregators"] = run["secure"]["aggregators"][:1]


def _swap_key_2(run: dict[str, Any]) -> None:
    (stranger,) = published([generate_keypair()], [URLS[1]])
    run["secure"]["aggregators"][1] = {**stranger.to_json(), "index": 2}


def _coordinator_keys(run: dict[str, Any]) -> None:
    run["secure"]["aggregators"] = [
        a.to_json() for a in published([generate_keypair() for _ in URLS], URLS)
    ]


def _two_of_two(run: dict[str, Any]) -> None:
    run["secure"]["config"].update(threshold=2, num_aggregators=2, quorum=2)
    run["secure"]["aggregators"] = [
        a.to_json() for a in published([generate_keypair() for _ in URLS[:2]], URLS[:2])
    ]


async def _refused(
    fleet: _Fleet,
    policy: ClientPolicy,
    flag: str,
    *,
    count: int = 1,
    records: Sequence[ParticipationRecord] | None = None,
) -> str:
    with pytest.raises(PolicyRefusal) as caught:
        await _clients(fleet, policy, count, records)
    message = str(caught.value)
    assert flag in message and message.endswith("nothing was sent."), message
    assert fleet.network.data_requests() == []
    return message


# ------------------------------------------------------------------------ control
@pytest.mark.slow
async def test_the_honest_coordinator_trains_with_pinned_clients(tmp_path: Path) -> None:
    """The control: the same fleet, untouched, takes the pinned clients' shares."""
    fleet = _fleet(tmp_path)
    await _clients(fleet, ClientPolicy(aggregator_fingerprints=PINS), count=2)
    assert fleet.service.core.model_version == 1
    assert {host for host, _, path in fleet.network.data_requests() if "shares" in path} == {
        "aggregator-1",
        "aggregator-2",
        "aggregator-3",
    }


@pytest.mark.slow
async def test_fedbuff_clients_queue_for_a_place_and_no_share_is_sent_for_nothing(
    tmp_path: Path,
) -> None:
    """The control for buffered runs: 4 clients, buffers of 2. Those that find both
    places held wait at the coordinator and keep their update, so every share set
    uploaded is summed: exactly 2 buffers x 2 clients x 3 aggregators."""
    fleet = _fleet(tmp_path, buffer=BufferConfig(buffer_size=2, max_staleness=2, max_versions=2))
    await _clients(fleet, ClientPolicy(aggregator_fingerprints=PINS), count=4)
    assert fleet.service.core.model_version == 2
    shares = [seen for seen in fleet.network.data_requests() if seen[2].endswith("/shares")]
    assert len(shares) == 2 * 2 * 3


# ---------------------------------------------------- refused before enrolling
@pytest.mark.parametrize(
    ("change", "policy", "flag"),
    [
        (_drop_secure, ClientPolicy(), "--allow-plaintext"),  # (i)
        (_drop_secure, ClientPolicy(aggregator_fingerprints=PINS), "--aggregator-fingerprint"),
        (_one_aggregator, ClientPolicy(aggregator_fingerprints=PINS), "--aggregator-fingerprint"),
        (_one_aggregator, ClientPolicy(trust_coordinator_keys=True), "--min-threshold"),  # (ii)
        (_swap_key_2, ClientPolicy(aggregator_fingerprints=PINS), "--aggregator-fingerprint"),
        # Issue 19 (1): the README's flags pin nothing; keys swapped for the
        # coordinator's own, at 2-of-3 or 2-of-2, are refused before anything leaves.
        (_coordinator_keys, ClientPolicy(), "--aggregator-fingerprint"),
        (_two_of_two, ClientPolicy(), "--aggregator-fingerprint"),
    ],
    ids=[
        "no-secure",
        "no-secure-pinned",
        "t=m=1-pinned",
        "t=m=1-trusting",
        "swapped-key",
        "coordinator-keys-unpinned",
        "2-of-2-unpinned",
    ],
)
async def test_a_downgraded_run_is_refused_before_enrolling(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], policy: ClientPolicy, flag: str
) -> None:
    fleet = _fleet(tmp_path)
    fleet.network.tamper = _on_run(change)
    await _refused(fleet, policy, flag)
    assert not fleet.network.enrolled()  # no one-time token was spent


async def test_aggregators_summing_fewer_than_the_minimum_cohort_are_refused(
    tmp_path: Path,
) -> None:
    """(iv) Every aggregator signs a minimum of 1; the client wants 2."""
    fleet = _fleet(tmp_path, min_participants=1)
    message = await _refused(fleet, ClientPolicy(aggregator_fingerprints=PINS), "--min-cohort")
    assert "aggregator 1's signed policy announces a minimum of 1" in message
    assert not fleet.network.enrolled()


async def test_a_policy_raised_on_the_way_without_its_aggregator_s_signature_is_refused(
    tmp_path: Path,
) -> None:
    """(iv) The aggregators sign 1; someone between rewrites it to 5."""
    fleet = _fleet(tmp_path, min_participants=1)

    def forge(method: str, path: str, body: Any) -> Any:
        if path == "/v1/policy":
            body["min_participants"] = 5
        return body

    fleet.network.tamper_aggregators = forge
    message = await _refused(fleet, PINNED, "--min-cohort")
    assert "not signed by its published key" in message


DP = DpConfig(placement="distributed", noise_multiplier=1.0, clip_norm=1.0, min_clients=2)
DP_FLOOR = ClientPolicy(
    aggregator_fingerprints=PINS,
    dp_placements=frozenset({"distributed"}),
    min_noise_multiplier=1.0,
)


async def test_a_run_announcing_less_noise_than_the_floor_is_refused(tmp_path: Path) -> None:
    """(v) In the run description."""
    fleet = _fleet(tmp_path, dp=DP)

    def weaken(run: dict[str, Any]) -> None:
        run["dp"]["noise_multiplier"] = 0.5

    fleet.network.tamper = _on_run(weaken)
    message = await _refused(fleet, DP_FLOOR, "--min-noise-multiplier")
    assert "announces 0.5" in message
    assert not fleet.network.enrolled()


# --------------------------------------------- refused inside the hand-in pipeline
async def test_a_task_whose_privacy_plan_is_below_the_floor_is_refused(tmp_path: Path) -> None:
    """(v) One task's privacy plan turns the aggregators' distributed noise into weak
    local noise of the client's own; the run itself is honest."""
    fleet = _fleet(tmp_path, dp=DP)

    def weaken(method: str, path: str, body: Any) -> Any:
        if path.endswith("/task") and body.get("privacy"):
            body["privacy"]["placement"] = "local"
            body["privacy"]["update_stddev"] = 0.5 * body["privacy"]["clip_norm"]
        return body

    fleet.network.tamper = weaken
    floor = replace(DP_FLOOR, dp_placements=frozenset())
    # Two clients: the round starts once both have joined; each refuses its task.
    message = await _refused(fleet, floor, "--min-noise-multiplier", count=2)
    assert "round 1's task announces local noise of multiplier 0.5" in message
    assert fleet.network.enrolled()  # the run passed; the task did not


async def test_a_ticket_weight_outside_the_accepted_range_is_refused(tmp_path: Path) -> None:
    """(vi) A FedBuff ticket that would scale the update up."""
    fleet = _fleet(tmp_path, buffer=BufferConfig(buffer_size=2, max_staleness=2, max_versions=1))

    def inflate(method: str, path: str, body: Any) -> Any:
        if path == "/v1/tickets":
            body["weight"] = 3.0
        return body

    fleet.network.tamper = inflate
    message = await _refused(fleet, ClientPolicy(aggregator_fingerprints=PINS), "--fedbuff-weights")
    assert "buffer 1's ticket announces weight 3" in message
    assert ("coordinator", "POST", "/v1/tickets") in fleet.network.seen


async def test_another_run_returned_at_enrollment_is_refused(tmp_path: Path) -> None:
    """(vii) The public description names the honest aggregators; the run returned at
    enrollment puts the coordinator's own key in place of aggregator 2's."""
    fleet = _fleet(tmp_path)

    def switch(method: str, path: str, body: Any) -> Any:
        if path == "/v1/clients" and method == "POST":
            _restate(body["run"], _swap_key_2)
        return body

    fleet.network.tamper = switch
    message = await _refused(fleet, PINNED, "returned a different run")
    assert fleet.network.enrolled()
    assert "Refused" in message


# ------------------------------------------------------ DP-FTRL: at most K rounds
PINNED = ClientPolicy(aggregator_fingerprints=PINS)
FTRL_K1 = DpConfig(
    placement="central",
    noise_multiplier=1.0,
    clip_norm=1.0,
    min_clients=2,
    mechanism="ftrl",
    max_participations=1,
)


@pytest.mark.slow
async def test_dp_ftrl_clients_count_their_rounds_and_refuse_one_beyond_k(
    tmp_path: Path,
) -> None:
    """DP-FTRL's epsilon holds for clients in at most K rounds, and only the
    coordinator's selection keeps to K. Each client counts for itself: with K = 1, a
    client that already handed in a round of this run (kept in its record file across
    restarts) refuses the coordinator's next one, and nothing is sent."""
    # The control: two fresh clients train the run's one round and record it.
    coordinator_identity = Identity.generate()
    honest = _fleet(tmp_path / "honest", dp=FTRL_K1, identity=coordinator_identity)
    files = [tmp_path / f"client-{i}.rounds.json" for i in range(2)]
    await _clients(honest, PINNED, 2, [ParticipationRecord(f) for f in files])
    assert honest.service.core.model_version == 1
    coordinator = honest.service.run_info.coordinator_key
    assert [ParticipationRecord(f).count(coordinator) for f in files] == [1, 1]
    # The same clients, restarted, asked for another round of the same run.
    again = _fleet(tmp_path / "again", dp=FTRL_K1, identity=coordinator_identity)
    message = await _refused(
        again,
        PINNED,
        "--dp-max-participations",
        count=2,
        records=[ParticipationRecord(f) for f in files],
    )
    assert "already took part in 1 rounds" in message
    assert again.network.enrolled()  # the run passed; the extra round did not


# ------------------------------------------- issue 19: the run every party agreed to
async def test_a_view_the_aggregators_did_not_consent_to_is_refused(tmp_path: Path) -> None:
    """(2) The aggregators consented to a run without DP; the clients are shown the same
    run with distributed noise (so that no aggregator would deal any). The consents are
    for another run id: the client refuses before anything leaves it."""
    fleet = _fleet(tmp_path)

    def add_noise(spec: dict[str, Any]) -> None:
        spec["dp"] = DP.to_json()

    fleet.network.tamper = _on_run(add_noise)
    with pytest.raises(PolicyRefusal) as caught:
        await _clients(fleet, PINNED)
    assert "0 of the 3 aggregators" in str(caught.value)
    assert "signed their consent" in str(caught.value)
    assert fleet.network.data_requests() == [] and not fleet.network.enrolled()


@pytest.mark.parametrize(
    "dp",
    [None, DpConfig(placement="distributed", noise_multiplier=0.01, clip_norm=100.0)],
    ids=["no-dp", "z=0.01,C=100"],
)
async def test_dp_removed_or_weakened_is_refused_by_the_clients_own_epsilon(
    tmp_path: Path, dp: DpConfig | None
) -> None:
    """(3) An honest-looking run, agreed to by every aggregator, without DP or with
    negligible noise: the client computes its epsilon from the description itself."""
    fleet = _fleet(tmp_path, dp=dp)
    message = await _refused(fleet, replace(PINNED, max_epsilon=8.0), "--max-epsilon")
    assert not fleet.network.enrolled()
    reason = "no differential privacy" if dp is None else "epsilon this client computes as"
    assert reason in message


async def test_a_new_run_of_the_same_coordinator_does_not_reset_k(tmp_path: Path) -> None:
    """(5) Two clients take part in K = 1 round of one run; the same coordinator starts
    another run (a new id) and asks them again: each refuses before training."""
    identity = Identity.generate()
    first = _fleet(tmp_path / "first", dp=FTRL_K1, identity=identity)
    records = [ParticipationRecord(tmp_path / f"client-{i}.rounds.json") for i in range(2)]
    await _clients(first, PINNED, 2, records)
    assert first.service.core.model_version == 1
    second = _fleet(tmp_path / "second", dp=replace(FTRL_K1, delta=1e-6), identity=identity)
    assert second.service.run_info.run_id != first.service.run_info.run_id
    message = await _refused(second, PINNED, "--dp-max-participations", count=2, records=records)
    assert "this coordinator's runs" in message


async def test_a_ticket_weight_below_the_runs_floor_is_refused(tmp_path: Path) -> None:
    """(6) A FedBuff ticket of weight 0, below the stalest weight the run declares."""
    fleet = _fleet(tmp_path, buffer=BufferConfig(buffer_size=2, max_staleness=2, max_versions=1))

    def zero(method: str, path: str, body: Any) -> Any:
        if path == "/v1/tickets":
            body["weight"] = 0.0
        return body

    fleet.network.tamper = zero
    with pytest.raises(PolicyRefusal) as caught:
        await _clients(fleet, PINNED)
    assert "weighs this update 0" in str(caught.value)
    assert fleet.network.data_requests() == []


async def test_a_model_already_trained_on_is_declined(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """(7) Both clients already handed in an update trained on this very model to this
    coordinator (their records say so): asked again, they decline and send nothing."""
    identity = Identity.generate()
    fleet = _fleet(tmp_path, identity=identity)
    records = [ParticipationRecord() for _ in range(2)]
    for record in records:
        record.add(identity.public_key_text, "an-earlier-run", 1, model=model_digest(START))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(_clients(fleet, PINNED, 2, records), timeout=3.0)
    assert fleet.network.data_requests() == []
    assert any("declined" in r.getMessage() for r in caplog.records)
