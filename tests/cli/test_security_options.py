"""The command line refuses unsafe or incomplete transport and enrollment settings, and
makes identities and tokens."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from veilfl.cli.main import main
from veilfl.errors import ConfigurationError
from veilfl.keyfiles import read_allowed_keys, read_identity, read_tokens


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 1
    return capsys.readouterr().err


def test_a_server_needs_a_certificate_or_insecure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    error = _fails(["server", "--run-dir", str(tmp_path), "--open-enrollment"], capsys)
    assert "--tls-cert" in error and "--insecure" in error
    key = tmp_path / "aggregator-1.key"
    key.write_text("{}")
    argv = ["aggregator", "--index", "1", "--key", str(key), "--coordinator", "https://h:1"]
    error = _fails(argv, capsys)
    assert "--tls-cert" in error


def test_a_server_needs_an_enrollment_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    error = _fails(["server", "--run-dir", str(tmp_path), "--insecure"], capsys)
    assert "--enrollment-tokens" in error and "--allowed-clients" in error


def test_plaintext_peers_need_insecure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error = _fails(["client", "--server", "http://127.0.0.1:1", "--client-index", "0"], capsys)
    assert "plaintext HTTP" in error
    main(["certs", "--out", str(tmp_path)])
    capsys.readouterr()
    error = _fails(
        [
            "aggregator",
            "--index",
            "1",
            "--key",
            str(tmp_path / "coordinator.key"),  # any existing file: refused before it is read
            "--coordinator",
            "http://127.0.0.1:1",
            "--tls-cert",
            str(tmp_path / "coordinator.pem"),
            "--tls-key",
            str(tmp_path / "coordinator.key"),
        ],
        capsys,
    )
    assert "plaintext HTTP" in error


def test_identity_is_made_once_and_then_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "me.key"
    assert main(["identity", "--out", str(path)]) == 0
    first = capsys.readouterr().out
    assert main(["identity", "--out", str(path)]) == 0
    second = capsys.readouterr().out
    key_line = [line for line in first.splitlines() if line.startswith("public key")]
    assert key_line and key_line[0] in second
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    identity = read_identity(path)
    assert identity.public_key_text in first
    assert identity.private_bytes.hex() not in first + second
    path.chmod(0o640)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        read_identity(path)
    allow = tmp_path / "allowed.txt"
    allow.write_text(f"# our clients\n{identity.public_key_text}  laptop\n")
    assert read_allowed_keys(allow) == [identity.public_key]
    allow.write_text("not-a-key\n")
    with pytest.raises(ConfigurationError, match="entry 1"):
        read_allowed_keys(allow)


def test_tokens_are_written_private_and_distinct(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    assert main(["tokens", "--out", str(path), "--count", "5"]) == 0
    tokens = read_tokens(path)
    assert len(set(tokens)) == 5 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert main(["tokens", "--out", str(path)]) == 1  # never overwritten
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        read_tokens(path)


def test_generated_tokens_never_start_with_a_dash(tmp_path: Path) -> None:
    from veilfl.auth.enrollment import generate_tokens

    # secrets.token_urlsafe alone starts with "-" about once in 64 tokens.
    assert not any(token.startswith("-") for token in generate_tokens(2_000))
    main(["tokens", "--out", str(tmp_path / "t.txt"), "--count", "50"])
    assert not any(token.startswith("-") for token in read_tokens(tmp_path / "t.txt"))


@pytest.mark.parametrize("how", ["equals", "file", "environment"])
def test_a_token_that_starts_with_a_dash_still_reaches_the_client(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from veilfl.cli.client_cmd import add_parser
    from veilfl.cli.security_options import TOKEN_ENV, enrollment_token_from

    token = "-abcDEF_123"  # the shape an older veilfl's token could have
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    argv = ["client", "--server", "https://127.0.0.1:1", "--client-index", "0"]
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    if how == "equals":
        argv.append(f"--enrollment-token={token}")
    elif how == "file":
        (tmp_path / "token").write_text(f"{token}\n")
        argv += ["--enrollment-token-file", str(tmp_path / "token")]
    else:
        monkeypatch.setenv(TOKEN_ENV, token)
    args = parser.parse_args(argv)
    assert enrollment_token_from(args.enrollment_token, args.enrollment_token_file) == token


def test_an_unreadable_token_file_is_one_clear_error(tmp_path: Path) -> None:
    from veilfl.cli.security_options import enrollment_token_from

    with pytest.raises(ConfigurationError, match=r"--enrollment-token-file .* cannot be read"):
        enrollment_token_from(None, tmp_path / "missing")
