"""Wrong, expired or missing credentials against a TLS + auth etcd, through the real CLI:
each is one line on stderr naming the endpoint and the cause, exit 1, no traceback; and
none waits for the request timeout (no retry can fix a certificate), so each ends long
before the generous bound the subprocess is given."""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.cluster.pki import Authority, Credential, Usage

from support.paths import ROOT
from support.secure_fixtures import SecureEtcd, secure_etcd

PASSWORD = "correct horse"
TIMEOUT = "30"  # --request-timeout: an error that waited for it would be a hang here


def fleetpy(
    env: dict[str, str], *args: str, verb: tuple[str, ...] = ("list-units",)
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetpy", "--request-timeout", TIMEOUT, *args, *verb],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,  # well under --request-timeout: the errors must not wait for it
        cwd=ROOT,
    )


def one_line(result: subprocess.CompletedProcess[str], endpoint: str, match: str) -> str:
    everything = result.stdout + result.stderr
    assert result.returncode == 1, everything
    assert "Traceback" not in everything, everything
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, everything
    assert lines[0].startswith(f"fleetpy: error: etcd at {endpoint}: "), lines[0]
    assert re.search(match, lines[0]), f"{match!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureEtcd]:
    directory = tmp_path_factory.mktemp("secure-errors")
    with secure_etcd(directory, ("m1",), passwords={"fleetpy-operator": PASSWORD}) as etcd:
        yield etcd


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority.create(tmp_path_factory.mktemp("other-ca"), "other-ca")


def flags(who: Credential) -> list[str]:
    return ["--cert-file", str(who.cert_file), "--key-file", str(who.key_file)]


def test_the_right_credential_works(secure: SecureEtcd) -> None:
    result = fleetpy(secure.env())
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.parametrize("verb", [("list-units",), ("start", "--no-block", "x.service")])
def test_ca_mismatch(secure: SecureEtcd, other_ca: Authority, verb: tuple[str, ...]) -> None:
    result = fleetpy(secure.env(), "--ca-file", str(other_ca.cert_file), verb=verb)
    one_line(
        result,
        secure.endpoints[0],
        r"TLS handshake failed: etcd's certificate is not signed by --ca-file \S*other-ca.pem "
        r"\(unable to get local issuer certificate\)$",
    )


def test_no_ca_file_and_a_private_ca(secure: SecureEtcd) -> None:
    env = secure.env()
    del env["FLEETPY_CA_FILE"]
    one_line(
        fleetpy(env),
        secure.endpoints[0],
        "TLS handshake failed: etcd's certificate is not signed by a CA this machine trusts "
        r".*give --ca-file$",
    )


def test_expired_client_certificate(secure: SecureEtcd, tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = secure.creds.ca.issue(
        tmp_path,
        "expired",
        Usage.CLIENT,
        common_name="fleetpy-operator",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    one_line(
        fleetpy(secure.env(), *flags(expired)),
        secure.endpoints[0],
        r"TLS handshake failed: etcd refused the client certificate --cert-file \S*expired.pem: "
        r"it expired on \d{4}-\d\d-\d\d \d\d:\d\d UTC$",
    )


def test_client_certificate_from_another_ca(
    secure: SecureEtcd, other_ca: Authority, tmp_path: Path
) -> None:
    stranger = other_ca.issue(tmp_path, "stranger", Usage.CLIENT, common_name="fleetpy-operator")
    one_line(
        fleetpy(secure.env(), *flags(stranger)),
        secure.endpoints[0],
        r"etcd refused the client certificate --cert-file \S*stranger.pem: it is issued by "
        r"CN=other-ca, a CA etcd does not trust$",
    )


def test_missing_client_certificate(secure: SecureEtcd) -> None:
    env = secure.env()
    del env["FLEETPY_CERT_FILE"], env["FLEETPY_KEY_FILE"]
    one_line(
        fleetpy(env),
        secure.endpoints[0],
        "TLS handshake failed: etcd requires a client certificate: give --cert-file and "
        "--key-file$",
    )


def test_wrong_password(secure: SecureEtcd, tmp_path: Path) -> None:
    # Any certificate of the cluster's CA opens TLS; the password decides who we are.
    guest = secure.creds.ca.issue(tmp_path, "guest", Usage.CLIENT)
    env = secure.env()
    good = fleetpy(env, *flags(guest), "--username", "fleetpy-operator", "--password", PASSWORD)
    assert good.returncode == 0, good.stderr
    one_line(
        fleetpy(env, *flags(guest), "--username", "fleetpy-operator", "--password", "wrong"),
        secure.endpoints[0],
        "authentication failed for user fleetpy-operator: wrong user name or password$",
    )
    one_line(
        fleetpy(env, *flags(guest), "--username", "fleetpy-engine", "--password", "any"),
        secure.endpoints[0],
        "user fleetpy-engine has no password: it authenticates with its client certificate",
    )


@pytest.mark.parametrize(
    "verb, keys",
    [
        (("list-units",), r"one of /fleetpy/state/\*, /fleetpy/machines/\*"),
        (("list-machines",), r"one of /fleetpy/machines/\*, /fleetpy/metadata/\*$"),
        (("start", "--no-block", "x.service"), r"one of /fleetpy/unit/x.service, "),
    ],
)
def test_a_user_without_permission_on_the_prefix(
    secure: SecureEtcd, tmp_path: Path, verb: tuple[str, ...], keys: str
) -> None:
    nobody = secure.creds.ca.issue(tmp_path, "nobody", Usage.CLIENT)  # no such etcd user
    one_line(
        fleetpy(secure.env(), *flags(nobody), verb=verb),
        secure.endpoints[0],
        f"permission denied for user nobody on {keys}",
    )
    agent = secure.creds.agents["m1"]  # an etcd user, but not one that reads units
    one_line(
        fleetpy(secure.env(agent), verb=verb),
        secure.endpoints[0],
        f"permission denied for user fleetpy-agent-m1 on {keys}",
    )


def test_every_member_of_a_cluster_named(other_ca: Authority, tmp_path: Path) -> None:
    """Three TLS members (peers over TLS too): a CA mismatch names each endpoint once."""
    with secure_etcd(tmp_path, ("m1",), members=3) as etcd:
        assert fleetpy(etcd.env()).returncode == 0
        line = one_line(
            fleetpy(etcd.env(), "--ca-file", str(other_ca.cert_file)),
            ", ".join(etcd.endpoints),
            "TLS handshake failed: etcd's certificate is not signed by --ca-file",
        )
        assert line.count("https://") == 3


def test_plain_http_against_a_tls_etcd(secure: SecureEtcd) -> None:
    """No TLS at all: etcd closes the connection, which a member going down does too, so
    this one is retried until --request-timeout, but the line says what to check."""
    plain = secure.endpoints[0].replace("https://", "http://")
    env = {
        k: v
        for k, v in secure.env().items()
        if k not in secure.creds.settings(secure.creds.operator)
    }
    env["FLEETPY_ENDPOINT"] = plain
    result = subprocess.run(
        [sys.executable, "-m", "fleetpy", "--request-timeout", "2", "list-units"],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"fleetpy: error: cannot reach etcd at {plain} (connection closed: does etcd want "
        "TLS? https:// and --ca-file) after 2s"
    ]
