"""TLS: the local CA, server certificates, and clients that trust only that CA."""

from __future__ import annotations

import ipaddress
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from fastapi import FastAPI

from veilfl.cli.local_fleet import free_port
from veilfl.cli.main import main
from veilfl.errors import ConfigurationError, TransportError
from veilfl.tls import (
    check_url_scheme,
    client_ssl_context,
    issue_server_certificate,
    load_certificate_authority,
    make_certificate_authority,
    server_certificate,
)
from veilfl.transport.peer import Peer, RetryPolicy

pytestmark = pytest.mark.timeout(60)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_ca_and_server_keys_are_private_and_never_overwritten(tmp_path: Path) -> None:
    authority = make_certificate_authority(tmp_path)
    issued = issue_server_certificate(authority, tmp_path, "coordinator", ["127.0.0.1"])
    assert _mode(tmp_path / "ca.key") == 0o600 and _mode(issued.key_file) == 0o600
    with pytest.raises(ConfigurationError, match=r"already exists.*reuses the CA"):
        make_certificate_authority(tmp_path)
    with pytest.raises(ConfigurationError, match="already exists"):
        issue_server_certificate(authority, tmp_path, "coordinator", ["127.0.0.1"])
    with pytest.raises(ConfigurationError, match="letters, digits"):
        issue_server_certificate(authority, tmp_path, "../evil", ["127.0.0.1"])
    reloaded = load_certificate_authority(tmp_path)
    assert reloaded.certificate == authority.certificate


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    authority = make_certificate_authority(tmp_path)
    issued = issue_server_certificate(authority, tmp_path, "agg", ["localhost"])
    issued.key_file.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        server_certificate(issued.cert_file, issued.key_file)
    (tmp_path / "ca.key").chmod(0o640)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        load_certificate_authority(tmp_path)


def test_server_certificates_name_their_hosts_and_are_not_cas(tmp_path: Path) -> None:
    authority = make_certificate_authority(tmp_path)
    issued = issue_server_certificate(authority, tmp_path, "c", ["127.0.0.1", "example.test"])
    certificate = x509.load_pem_x509_certificate(issued.cert_file.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["example.test"]
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert certificate.issuer == authority.certificate.subject


class _Server:
    """A tiny HTTPS server that counts the requests that reach its handler."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.calls = 0
        app = FastAPI()

        @app.get("/ping")
        async def ping() -> dict[str, str]:
            self.calls += 1
            return {"ok": "yes"}

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="error",
                ssl_certfile=str(cert_file),
                ssl_keyfile=str(key_file),
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the HTTPS server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture
def https(tmp_path: Path) -> Iterator[tuple[_Server, Path]]:
    authority = make_certificate_authority(tmp_path / "ca")
    issued = issue_server_certificate(authority, tmp_path / "ca", "server", ["127.0.0.1"])
    with _Server(issued.cert_file, issued.key_file) as server:
        yield server, authority.cert_file


def test_a_client_trusting_the_ca_connects(https: tuple[_Server, Path]) -> None:
    server, ca_file = https
    response = httpx.get(
        f"https://127.0.0.1:{server.port}/ping", verify=client_ssl_context(ca_file)
    )
    assert response.status_code == 200 and server.calls == 1


def test_a_client_trusting_another_ca_fails_closed(
    https: tuple[_Server, Path], tmp_path: Path
) -> None:
    server, _ = https
    wrong = make_certificate_authority(tmp_path / "other-ca")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(
            f"https://127.0.0.1:{server.port}/ping", verify=client_ssl_context(wrong.cert_file)
        )
    assert server.calls == 0


async def test_a_peer_with_the_wrong_ca_gives_up_at_once_and_sends_nothing(
    https: tuple[_Server, Path], tmp_path: Path
) -> None:
    server, _ = https
    wrong = make_certificate_authority(tmp_path / "other-ca")
    async with httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{server.port}", verify=client_ssl_context(wrong.cert_file)
    ) as http:
        peer = Peer(http, RetryPolicy(max_attempts=5, initial_backoff_s=1.0))
        began = time.monotonic()
        with pytest.raises(TransportError, match="does not verify against the trusted CA"):
            await peer.request("GET", "/ping")
    assert time.monotonic() - began < 1.0  # not retried: retrying cannot help
    assert server.calls == 0


def test_a_certificate_for_another_host_is_refused(tmp_path: Path) -> None:
    authority = make_certificate_authority(tmp_path)
    issued = issue_server_certificate(authority, tmp_path, "elsewhere", ["10.9.8.7"])
    with _Server(issued.cert_file, issued.key_file) as server:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(
                f"https://127.0.0.1:{server.port}/ping",
                verify=client_ssl_context(authority.cert_file),
            )
        assert server.calls == 0


def test_plaintext_urls_need_insecure(tmp_path: Path) -> None:
    check_url_scheme("https://h:1", insecure=False)
    check_url_scheme("http://h:1", insecure=True)
    with pytest.raises(ConfigurationError, match="--insecure"):
        check_url_scheme("http://h:1", insecure=False)
    with pytest.raises(ConfigurationError, match="not an http"):
        check_url_scheme("ftp://h:1", insecure=True)
    with pytest.raises(ConfigurationError, match="veilfl certs"):
        client_ssl_context(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigurationError, match="not a PEM CA"):
        client_ssl_context(tmp_path / "junk.pem")


def test_the_client_context_trusts_only_the_given_ca(tmp_path: Path) -> None:
    authority = make_certificate_authority(tmp_path)
    context = client_ssl_context(authority.cert_file)
    trusted = context.get_ca_certs()
    assert [ca["subject"] for ca in trusted] == [((("commonName", "veilfl local CA"),),)]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_an_empty_or_unreadable_ca_file_is_refused_not_replaced_by_system_cas(
    tmp_path: Path,
) -> None:
    (tmp_path / "empty.pem").write_text("")
    with pytest.raises(ConfigurationError, match="not a PEM CA"):
        client_ssl_context(tmp_path / "empty.pem")
    with pytest.raises(ConfigurationError, match=r"cannot be read.*veilfl certs"):
        client_ssl_context(tmp_path)  # a folder, not a file
    with pytest.raises(ConfigurationError, match=r"no CA key.*veilfl certs"):
        load_certificate_authority(tmp_path / "nowhere")


def test_the_certs_command_makes_a_ca_then_reuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "--out", str(tmp_path), "--name", "coordinator"]) == 0
    first = (tmp_path / "ca.pem").read_bytes()
    assert main(["certs", "--out", str(tmp_path), "--name", "aggregator-1", "--host", "::1"]) == 0
    assert (tmp_path / "ca.pem").read_bytes() == first
    assert {p.name for p in tmp_path.iterdir()} == {
        "ca.pem",
        "ca.key",
        "coordinator.pem",
        "coordinator.key",
        "aggregator-1.pem",
        "aggregator-1.key",
    }
    assert "--ca-cert" in capsys.readouterr().out
