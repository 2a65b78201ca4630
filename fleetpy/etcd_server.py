"""Start a throwaway etcd server (tests, benchmarks, the local demo cluster)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FleetpyError


class EtcdServerError(FleetpyError):
    """etcd could not be started."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EtcdServer:
    """A local etcd on free ports with its own data dir; stop() removes both."""

    binary: str = "etcd"
    data_dir: Path | None = None
    client_port: int = 0
    peer_port: int = 0
    log_path: Path | None = None
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _owns_dir: bool = field(default=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.endpoint}/metrics"

    def start(self, timeout: float = 20.0) -> "EtcdServer":
        path = shutil.which(self.binary)
        if path is None:
            raise EtcdServerError("etcd not found: apt-get install etcd-server")
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="fleetpy-etcd-"))
            self._owns_dir = True
        self.client_port = self.client_port or free_port()
        self.peer_port = self.peer_port or free_port()
        self.log_path = self.log_path or self.data_dir.with_suffix(".log")
        argv = [
            path, "--name", "fleetpy-test", "--data-dir", str(self.data_dir / "data"),
            "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-cluster", f"fleetpy-test=http://127.0.0.1:{self.peer_port}",
            "--log-level", "warn", *self.extra_args,
        ]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EtcdServerError(f"etcd exited early; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1) as response:
                    if b"true" in response.read():
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise EtcdServerError(f"etcd did not become healthy in {timeout:g}s; see {self.log_path}")

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return response.read().decode()

    def pause(self) -> None:
        """Make etcd unreachable without losing data (SIGSTOP)."""
        if self.process:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused etcd ignores SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._owns_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            if self.log_path and self.log_path.exists():
                self.log_path.unlink()

    def __enter__(self) -> "EtcdServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def grpc_request_count(metrics_text: str) -> int:
    """Sum of etcd's grpc_server_handled_total: every unary RPC and stream etcd served."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("grpc_server_handled_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)
