"""`fleetpy api` checks what it was given before it asks etcd anything: a bad --listen, a
missing certificate or token file, a TCP listener without credentials, an address in use,
a unix socket path that cannot be bound, each one clean error line and exit 1 at once, even when no etcd answers (before, it waited
for etcd first, for ever if etcd was away)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdTls


@pytest.fixture
def dead_etcd() -> Iterator[str]:
    """An endpoint where nothing answers: a port bound (so nobody else takes it), not listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def fleetpy_api(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        ["fleetpy", "--endpoint", endpoint, "--request-timeout", "1", "api", *args],
        capture_output=True,
        text=True,
        # etcd unreachable: the old order never got past waiting for it.
        timeout=60,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )


def test_options_are_checked_before_etcd_is_asked(dead_etcd: str, tmp_path: Path) -> None:
    tls = EtcdTls.generate(tmp_path / "tls")
    certs = ["--api-cert-file", str(tls.cert_file), "--api-key-file", str(tls.key_file)]
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    cases = [
        (["--listen", "nowhere"], "--listen 'nowhere': expected HOST:PORT"),
        (["--listen", "unix://relative.sock"], "the socket path must be absolute"),
        (
            ["--listen", "127.0.0.1:0", "--insecure", "--token-file", str(tmp_path / "missing")],
            "missing",
        ),
        (
            [
                "--listen",
                "127.0.0.1:0",
                "--api-cert-file",
                str(tmp_path / "nope.pem"),
                "--api-key-file",
                str(tls.key_file),
                "--token-file",
                str(tmp_path / "missing"),
            ],
            "cannot load the API's TLS files",
        ),
        (["--listen", "127.0.0.1:0"], "a TCP listener needs TLS"),
        (["--listen", "127.0.0.1:0", *certs], "a TCP listener needs credentials"),
        (
            ["--listen", f"127.0.0.1:{taken.getsockname()[1]}", "--insecure"],
            f"cannot listen on 127.0.0.1:{taken.getsockname()[1]}",
        ),
        # A socket folder that cannot be made, and a path longer than AF_UNIX allows.
        (
            ["--listen", "/proc/nope/api.sock"],
            "cannot listen on /proc/nope/api.sock: No such file or directory",
        ),
        (["--listen", str(tmp_path / ("s" * 120))], "AF_UNIX path too long"),
        # a mistyped folder: an error, and no folder left behind
        (
            ["--listen", str(tmp_path / "typo" / "run" / "api.sock")],
            "api.sock: No such file or directory",
        ),
    ]
    try:
        for args, message in cases:
            result = fleetpy_api(dead_etcd, *args)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 1, (args, result.stderr)
            assert lines[-1].startswith("fleetpy: error: ") and message in lines[-1], (args, lines)
            assert "Traceback" not in result.stderr
            assert "etcd_unreachable" not in result.stderr, args  # etcd was never asked
        assert not (tmp_path / "typo").exists()
    finally:
        taken.close()
