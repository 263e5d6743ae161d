"""Test support: a secure run over HTTP in one process, built as ``veilfl server`` and
``veilfl aggregator`` build it: the declared run sealed (its id is its hash), real
aggregator apps attached to it and consenting, and the coordinator's app serving the
description with their consents. Requests are routed by host (``coordinator``,
``aggregator-J``) through whatever transport the test puts in front of ``apps``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
from tests.tiny_coordinator import described

from veilfl.aggregator.access import AggregatorAccess
from veilfl.aggregator.service import AggregatorService, create_aggregator_app
from veilfl.auth.enrollment import EnrollmentPolicy
from veilfl.auth.identity import Identity
from veilfl.crypto.keys import AggregatorKeyPair
from veilfl.protocol.assembly import build_coordinator
from veilfl.protocol.run_description import RunDescription
from veilfl.protocol.run_spec import RunSpec
from veilfl.server.aggregator_link import HttpAggregatorLink
from veilfl.server.app import create_app
from veilfl.server.client_access import ClientAccess
from veilfl.server.commands import ServerCommands
from veilfl.server.service import CoordinatorService
from veilfl.tensors import Weights, spec_of

__all__ = ["InProcessFleet", "in_process_fleet"]


@dataclass
class InProcessFleet:
    """The coordinator's service, its link to the aggregators, and the description."""

    service: CoordinatorService
    link: HttpAggregatorLink
    description: RunDescription
    identity: Identity

    @property
    def run_id(self) -> str:
        """The run's id (its description's hash)."""
        return self.description.run_id


def in_process_fleet(
    settings: RunSpec,
    *,
    keys: list[AggregatorKeyPair],
    start: Weights,
    apps: dict[str, httpx.ASGITransport],
    transport: httpx.AsyncBaseTransport,
    spool: Path,
    identity: Identity | None = None,
    min_participants: int = 2,
) -> InProcessFleet:
    """Build the run of ``settings`` (its aggregators' URLs are ``http://aggregator-J``)
    and put its apps into ``apps``; ``transport`` routes to them."""
    identity = identity or Identity.generate()
    description = described(
        settings, model_size=spec_of(start).total_size, coordinator_key=identity.public_key_text
    )
    run = description.info
    assert run.secure is not None
    core = build_coordinator(
        description.spec, initial_weights=start, run_id=description.run_id
    ).coordinator
    link = HttpAggregatorLink(
        {a.index: a.url for a in run.secure.aggregators},
        vector_length=run.secure.layout.measurement_length,
        run_id=description.run_id,
        identity=identity,
        transport=transport,
    )
    consents = {}
    for index, key in enumerate(keys, start=1):
        aggregator = AggregatorService(
            index=index,
            keypair=key,
            spool=spool / f"a{index}",
            min_participants=min_participants,
            peer_fingerprints=[k.fingerprint for k in keys],
        )
        apps[f"aggregator-{index}"] = httpx.ASGITransport(
            app=create_aggregator_app(
                aggregator,
                coordinator_url=None,
                max_share_bytes=1 << 24,
                access=AggregatorAccess(index=index, rate_limit=None),
                run=run,
            )
        )
        consents[index] = aggregator.consent()
    description = description.with_consents(consents)
    service = CoordinatorService(
        core,
        description=description,
        performer=ServerCommands(link, lambda outcome: None),
        max_update_bytes=1 << 24,
    )
    access = ClientAccess.create(
        run_id=description.run_id, policy=EnrollmentPolicy(open=True), coordinator=identity
    )
    apps["coordinator"] = httpx.ASGITransport(
        app=create_app(service, metrics=lambda: [], access=access)
    )
    return InProcessFleet(service=service, link=link, description=description, identity=identity)
