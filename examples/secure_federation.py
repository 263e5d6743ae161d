"""A whole secure federation from one Python script: python examples/secure_federation.py

A coordinator, three aggregators (m = 3, threshold t = 2) and three clients run as
asyncio tasks in this process, over TLS on loopback ports, through veilfl's public API
only. Each client's update is split into shares for the aggregators, so no single
server sees it; two secure rounds train a small model on synthetic data.
"""

import asyncio
import secrets
import socket
import tempfile
from pathlib import Path

import numpy as np
from torch import nn

import veilfl

AGGREGATORS, CLIENTS, FEATURES, CLASSES = 3, 3, 20, 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, CLASSES))


def datasets() -> list[veilfl.ArrayDataset]:
    """Synthetic data (not secret): labels from a hidden linear rule; the last is the
    coordinator's evaluation set."""
    rng = np.random.default_rng(0)
    rule = rng.normal(size=(FEATURES, CLASSES))
    parts = []
    for _ in range(CLIENTS + 1):
        x = rng.normal(size=(300, FEATURES)).astype(np.float32)
        parts.append(veilfl.ArrayDataset(x, (x @ rule).argmax(1).astype(np.int64)))
    return parts


async def federate(folder: Path) -> list[veilfl.RoundMetrics]:
    # TLS: a CA for this federation, a certificate for each server, and each party trusts the CA.
    authority = veilfl.make_certificate_authority(folder)
    names = ["coordinator", *(f"aggregator-{j}" for j in range(1, AGGREGATORS + 1))]
    certificates = {
        name: veilfl.issue_server_certificate(authority, folder, name, ["127.0.0.1"])
        for name in names
    }
    verify = veilfl.client_ssl_context(authority.cert_file)
    # Each aggregator's key pair; every party pins the aggregators by their fingerprints.
    keys = [veilfl.generate_keypair() for _ in range(AGGREGATORS)]
    fingerprints = [key.fingerprint for key in keys]
    urls = {name: f"https://127.0.0.1:{free_port()}" for name in names}
    tokens = [secrets.token_urlsafe(16) for _ in range(CLIENTS)]  # one-time enrollment

    spec = veilfl.RunSpec(
        model_name="mlp",
        rounds=veilfl.RoundConfig(num_rounds=2, clients_per_round=CLIENTS, min_clients=CLIENTS),
        plan=veilfl.LocalTrainingPlan(learning_rate=0.1, epochs=2, batch_size=32),
        secure=veilfl.SecureSettings.for_aggregators(
            [(urls[f"aggregator-{j}"], key) for j, key in enumerate(keys, start=1)],
            threshold=2,
            norm_bound=5.0,
        ),
    )
    *client_data, test_data = datasets()

    def port(name: str) -> int:
        return int(urls[name].rsplit(":", 1)[1])

    coordinator = asyncio.create_task(
        veilfl.run_coordinator(
            spec,
            run_dir=folder / "run",
            learner=veilfl.sgd_learner(model, seed=0),
            enrollment=veilfl.EnrollmentPolicy.from_tokens(tokens),
            eval_data=test_data,
            port=port("coordinator"),
            certificate=certificates["coordinator"],
            verify=verify,
        )
    )
    aggregators = [
        asyncio.create_task(
            veilfl.run_aggregator(
                index=j,
                key=key,
                coordinator_url=urls["coordinator"],
                peer_fingerprints=fingerprints,
                port=port(f"aggregator-{j}"),
                certificate=certificates[f"aggregator-{j}"],
                verify=verify,
                spool=folder / f"spool-{j}",
            )
        )
        for j, key in enumerate(keys, start=1)
    ]
    policy = veilfl.ClientPolicy(aggregator_fingerprints=dict(enumerate(fingerprints, start=1)))
    summaries = await asyncio.gather(
        *(
            veilfl.run_client(
                urls["coordinator"],
                veilfl.sgd_learner(model, seed=i),
                data,
                name=f"client-{i}",
                enrollment_token=token,
                verify=verify,
                policy=policy,
                connect_timeout_s=30,
            )
            for i, (data, token) in enumerate(zip(client_data, tokens, strict=True))
        )
    )
    history = await coordinator
    await asyncio.gather(*aggregators)  # each exits once the coordinator reports the run done
    print(f"{len(summaries)} clients took part in {len(history)} secure rounds")
    return list(history)


with tempfile.TemporaryDirectory() as tmp:
    for metrics in asyncio.run(federate(Path(tmp))):
        print(f"round {metrics.round_id}: accuracy {metrics.test_accuracy:.3f}")
