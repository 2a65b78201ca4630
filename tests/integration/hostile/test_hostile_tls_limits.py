"""Class 5 (TLS flags) and class 6 (limits): checked before connecting, one line each.

A client certificate without its key once killed the CLI inside gRPC's C core
(SIGABRT and a stack dump); nan/inf timeouts were accepted and blamed on etcd.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from support.hostile_harness import Hostile


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a client certificate signed by it, a second key, an encrypted key."""
    d = tmp_path_factory.mktemp("pki")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=fleetpy-test-ca",
        cwd=d,
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=client",
        cwd=d,
    )
    openssl(
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.pem",
        "-days",
        "2",
        cwd=d,
    )
    openssl("genrsa", "-out", "other.key", "2048", cwd=d)
    openssl("genrsa", "-aes256", "-passout", "pass:secret", "-out", "encrypted.key", "2048", cwd=d)
    (d / "garbage.pem").write_text("this is not a certificate\n")
    (d / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    os.mkfifo(d / "fifo.pem")
    return d


def tls_cases(d: Path) -> list[tuple[list[str], str]]:
    ca, cert, key = str(d / "ca.pem"), str(d / "client.pem"), str(d / "client.key")
    return [
        (["--cert-file", cert], "--cert-file needs --key-file too"),
        (["--key-file", key], "--key-file needs --cert-file too"),
        (["--ca-file", ca, "--cert-file", cert], "--cert-file needs --key-file too"),
        (["--ca-file", ca, "--key-file", key], "--key-file needs --cert-file too"),
        (["--ca-file", str(d / "garbage.pem")], "holds no PEM certificate"),
        (["--ca-file", str(d / "broken.pem")], "is not a valid PEM certificate"),
        (["--ca-file", key], "holds no PEM certificate"),
        (["--ca-file", str(d / "missing.pem")], "No such file or directory"),
        (["--ca-file", str(d / "fifo.pem")], "not a regular file"),
        (["--ca-file", "/dev/zero"], "not a regular file"),
        (["--ca-file", str(d)], "not a regular file"),
        (["--ca-file", ca, "--cert-file", key, "--key-file", cert], "swapped?"),
        (
            ["--ca-file", ca, "--cert-file", cert, "--key-file", str(d / "other.key")],
            "do not belong together",
        ),
        (
            ["--ca-file", ca, "--cert-file", cert, "--key-file", str(d / "encrypted.key")],
            "is encrypted",
        ),
        (["--ca-file", ca, "--cert-file", ca, "--key-file", key], "do not belong together"),
        (
            ["--ca-file", ca, "--cert-file", str(d / "garbage.pem"), "--key-file", key],
            "holds no PEM certificate",
        ),
        (
            ["--ca-file", ca, "--cert-file", cert, "--key-file", str(d / "garbage.pem")],
            "holds no PEM private key",
        ),
    ]


VERBS = [("list-units",), ("start", "--no-block", "hello.service"), ("destroy", "hello.service")]


@pytest.mark.parametrize("case", range(17))
def test_tls_flag_problems_are_one_line_before_connecting(
    seeded: Hostile, pki: Path, case: int
) -> None:
    flags, message = tls_cases(pki)[case]
    for verb in VERBS:
        seeded.rejects(*flags, *verb, match=message)
    # The environment variables are checked the same way.
    env = {
        "FLEETPY_" + f.removeprefix("--").replace("-", "_").upper(): v
        for f, v in zip(flags[::2], flags[1::2])
    }
    seeded.rejects("list-machines", env=env, match=message)


def test_good_tls_material_against_a_plain_etcd_is_one_line(seeded: Hostile, pki: Path) -> None:
    """The handshake fails (etcd speaks plain HTTP here): one line, no gRPC log lines."""
    line = seeded.rejects(
        "--ca-file",
        str(pki / "ca.pem"),
        "--cert-file",
        str(pki / "client.pem"),
        "--key-file",
        str(pki / "client.key"),
        "--request-timeout",
        "2",
        "list-units",
    )
    assert seeded.etcd.endpoint.removeprefix("http://") in line


@pytest.mark.parametrize(
    "value", ["nan", "inf", "-inf", "1e400", "0", "-1", "1e9", "abc", "", "NaN", "5s"]
)
def test_request_timeout_bounds(seeded: Hostile, value: str) -> None:
    seeded.rejects("--request-timeout", value, "list-units", match="request-timeout")
    seeded.rejects(
        "list-units",
        env={"FLEETPY_REQUEST_TIMEOUT": value} if value else {"FLEETPY_REQUEST_TIMEOUT": " "},
        match="REQUEST_TIMEOUT|request-timeout",
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ttl", "nan"], "invalid --ttl value"),
        (["--ttl", "1e9"], "invalid --ttl value"),
        (["--ttl", "9" * 5000], "invalid --ttl value"),
        (["--ttl", "0"], "invalid --ttl value"),
        (["--machine-id", "a/b"], "invalid --machine-id value"),
        (["--machine-id", "x" * 300], "invalid --machine-id value"),
        (["--machine-id", "\x1b]0;pwned\x07"], "invalid --machine-id value"),
        (["--public-ip", "not-an-ip"], "invalid --public-ip value"),
        (["--metadata", "role"], "invalid metadata item"),
        (["--metadata", "ro le=x"], "invalid metadata"),
        (["--metadata", "k=\x1b[2J"], "invalid metadata value"),
        (["--metadata", ",".join(f"k{i}=v" for i in range(100))], "too much metadata"),
        (["--unit-manager", "docker"], "invalid --unit-manager value"),
    ],
)
def test_agent_setting_bounds(seeded: Hostile, args: list[str], message: str) -> None:
    seeded.rejects("agent", "--unit-manager", "simulated", *args, match=message)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lease-ttl", "inf"], "invalid --lease-ttl value"),
        (["--lease-ttl", "99999999999"], "invalid --lease-ttl value"),
        (["--reconcile-interval", "nan"], "invalid --reconcile-interval value"),
        (["--reconcile-interval", "1e400"], "invalid --reconcile-interval value"),
    ],
)
def test_engine_setting_bounds(seeded: Hostile, args: list[str], message: str) -> None:
    seeded.rejects("engine", *args, match=message)


@pytest.mark.parametrize(
    "name, message",
    [
        ("a" * 248 + ".service", "systemd's limit is 255"),
        ("a" * 5000 + ".service", "systemd's limit is 255"),
        ("web@" + "i" * 300 + ".service", "systemd's limit is 255"),
    ],
)
def test_unit_names_of_256_characters_or_more(seeded: Hostile, name: str, message: str) -> None:
    seeded.rejects("start", "--no-block", name, match=message)
    seeded.rejects("destroy", name, match=message)
    seeded.rejects("cat", name, match=message)


def test_longest_unit_name_is_accepted(hostile: Hostile) -> None:
    name = "a" * 247 + ".service"
    assert len(name) == 255
    hostile.ok("submit", hostile.write(name))
    hostile.ok("destroy", name)


@pytest.mark.parametrize(
    "value", ["9" * 5000, "99999999", "100001", "0", "-1", "1e3", "0x10", "１"]
)
def test_max_per_machine_bounds(seeded: Hostile, value: str) -> None:
    path = seeded.write(
        "maxed.service", f"[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nMaxPerMachine={value}\n"
    )
    line = seeded.rejects("submit", path, match="MaxPerMachine")
    assert len(line) < 300


def test_unit_file_size_limit(seeded: Hostile) -> None:
    big = "[Service]\nExecStart=/bin/true\n" + "".join(
        f"X-Pad{i}=" + "x" * 100 + "\n" for i in range(700)
    )
    path = seeded.write("big.service", big)
    seeded.rejects("submit", path, match="64 KiB")
    huge = seeded.write("huge.service", b"[Service]\n" + b"#" * (10 * 1024 * 1024))
    seeded.rejects("start", "--no-block", huge, match="64 KiB")


def test_too_many_units_in_one_command(seeded: Hostile) -> None:
    names = [f"web@{i}.service" for i in range(10_001)]  # fits in one argv
    seeded.rejects("start", "--no-block", *names, match="at most 10000")
    seeded.rejects("destroy", *names, match="at most 10000")


def test_big_units_are_written_in_transactions_etcd_accepts(hostile: Hostile) -> None:
    """40 units of ~60 KiB would be 2.4 MB in one transaction (etcd refuses 1.5 MiB)."""
    body = "[Service]\nExecStart=/bin/true\n" + "".join(
        f"X-Pad{i}=" + "y" * 100 + "\n" for i in range(580)
    )
    paths = [hostile.write(f"big{i}.service", body + f"X-Id={i}\n") for i in range(45)]
    outcome = hostile.run("submit", *paths)
    assert outcome.code == 0, outcome.describe()
    assert len(hostile.units()) == 45
