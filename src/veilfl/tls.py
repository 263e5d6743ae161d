"""TLS for the coordinator and the aggregators: a local CA, server certificates, and
the client-side SSL context that trusts only that CA.

``veilfl certs`` writes, into one folder::

    ca.pem, ca.key            the certificate authority (key mode 0600)
    <name>.pem, <name>.key    one server certificate per name (key mode 0600)

Servers pass their certificate and key to uvicorn; clients, aggregators and the
coordinator verify every server against ``ca.pem`` with host-name checking, so a
server presenting a certificate from any other CA is refused before a byte of the
request is sent. Plain HTTP is possible only with an explicit ``--insecure``.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from veilfl.errors import ConfigurationError
from veilfl.keyfiles import require_private_mode, write_private_file

__all__ = [
    "INSECURE_WARNING",
    "CertificateAuthority",
    "ServerCertificate",
    "check_url_scheme",
    "client_ssl_context",
    "issue_server_certificate",
    "load_certificate_authority",
    "make_certificate_authority",
    "server_certificate",
    "uvicorn_tls_options",
]

INSECURE_WARNING = (
    "--insecure: plaintext HTTP, so requests, model updates and metadata cross the network "
    "unencrypted and unauthenticated; use it only on a trusted loopback or test network."
)
_CA_DAYS = 3650
_SERVER_DAYS = 825
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA that can issue server certificates (its key stays in memory only here)."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey
    cert_file: Path


@dataclass(frozen=True)
class ServerCertificate:
    """A server's certificate and private key files."""

    cert_file: Path
    key_file: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_certificate_authority(
    folder: Path, *, common_name: str = "veilfl local CA"
) -> CertificateAuthority:
    """Create ``ca.pem`` and ``ca.key`` (0600) in ``folder``.

    Raises:
        ConfigurationError: if ``folder`` already holds a CA key.
    """
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    try:
        write_private_file(folder / "ca.key", _pem_key(key))
    except ConfigurationError:
        raise ConfigurationError(
            f"{folder / 'ca.key'} already exists; `veilfl certs` reuses the CA in a folder. "
            "To start over, remove ca.pem and ca.key (then reissue every server certificate)."
        ) from None
    cert_file = folder / "ca.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return CertificateAuthority(certificate=certificate, private_key=key, cert_file=cert_file)


def load_certificate_authority(folder: Path) -> CertificateAuthority:
    """Load the CA in ``folder`` (to issue more certificates).

    Raises:
        ConfigurationError: if it is missing, unreadable or its key is not private.
    """
    if not (folder / "ca.key").exists():
        raise ConfigurationError(
            f"{folder} holds no CA key (ca.key); make one with `veilfl certs`."
        )
    require_private_mode(folder / "ca.key")
    try:
        certificate = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    except (OSError, ValueError):
        raise ConfigurationError(
            f"{folder} holds no readable CA (ca.pem and ca.key); make one with `veilfl certs`."
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError(f"{folder / 'ca.key'} is not an elliptic-curve CA key.")
    return CertificateAuthority(
        certificate=certificate, private_key=key, cert_file=folder / "ca.pem"
    )


def _subject_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue_server_certificate(
    authority: CertificateAuthority, folder: Path, name: str, hosts: Sequence[str]
) -> ServerCertificate:
    """Write ``<name>.pem`` and ``<name>.key`` (0600): a server certificate for ``hosts``.

    Raises:
        ConfigurationError: if ``name`` is not a plain file stem, no host is given, or
            the key file already exists.
    """
    if not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"A certificate name is letters, digits, '-' and '_' only; got {name!r}."
        )
    if not hosts:
        raise ConfigurationError("A server certificate needs at least one host name or address.")
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_subject_names(hosts)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.private_key.public_key()),
            critical=False,
        )
        .sign(authority.private_key, hashes.SHA256())
    )
    key_file = folder / f"{name}.key"
    write_private_file(key_file, _pem_key(key))
    cert_file = folder / f"{name}.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return ServerCertificate(cert_file=cert_file, key_file=key_file)


def server_certificate(cert_file: Path, key_file: Path) -> ServerCertificate:
    """A server's certificate files, checked before the server starts.

    Raises:
        ConfigurationError: if either is missing, or the key is readable by others.
    """
    if not cert_file.exists():
        raise ConfigurationError(
            f"The certificate {cert_file} does not exist; make it with `veilfl certs`."
        )
    require_private_mode(key_file)
    return ServerCertificate(cert_file=cert_file, key_file=key_file)


def client_ssl_context(ca_file: Path) -> ssl.SSLContext:
    """An SSL context that trusts only ``ca_file``, checks host names, and needs TLS 1.2+.

    Raises:
        ConfigurationError: if the CA file is missing, unreadable or not a certificate.
    """
    if not ca_file.exists():
        raise ConfigurationError(
            f"The CA certificate {ca_file} does not exist; make it with `veilfl certs`."
        )
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    except ssl.SSLError:  # a subclass of OSError, so it comes first
        raise ConfigurationError(
            f"{ca_file} is not a PEM CA certificate; use the ca.pem written by `veilfl certs`."
        ) from None
    except OSError as exc:
        raise ConfigurationError(
            f"The CA certificate {ca_file} cannot be read ({exc.strerror or type(exc).__name__}); "
            "use the ca.pem written by `veilfl certs`."
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def uvicorn_tls_options(certificate: ServerCertificate | None) -> dict[str, str]:
    """``ssl_certfile``/``ssl_keyfile`` for uvicorn to serve ``certificate`` (empty for
    plaintext HTTP)."""
    if certificate is None:
        return {}
    return {"ssl_certfile": str(certificate.cert_file), "ssl_keyfile": str(certificate.key_file)}


def check_url_scheme(url: str, *, insecure: bool) -> None:
    """Refuse ``http://`` unless ``insecure``, and any scheme but http and https.

    Raises:
        ConfigurationError: saying what to use instead.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "https":
        return
    if scheme == "http":
        if insecure:
            return
        raise ConfigurationError(
            f"{url} is plaintext HTTP. Use an https:// URL (with --ca-cert from `veilfl certs`), "
            "or pass --insecure to accept plaintext on a trusted test network."
        )
    raise ConfigurationError(f"{url} is not an http:// or https:// URL.")
