"""Start throwaway etcd servers (tests, benchmarks, the local demo cluster).

EtcdServer is one member; EtcdCluster is N members on loopback, for failover tests.
Both can lose a member and get it back on the same data dir and ports: kill() is a
crash (SIGKILL), pause() a hung or partitioned member (SIGSTOP), restart() a reboot.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FleetpyError
from .pki import Authority, Usage


class EtcdServerError(FleetpyError):
    """etcd could not be started."""


# Ports handed out below the kernel's ephemeral range (32768-60999 by default): a port
# the kernel picks for "port 0" can be taken by any outgoing connection before the etcd
# it was picked for binds it (a 3-member cluster once failed to start that way).
_PORT_RANGE = (20000, 32767)
# Where this process's next pick starts: ports are handed out in turn from a random
# start, so one process never hands out a port twice in a row (a member's client and
# peer port are picked before either is bound).
_picks = itertools.count(random.randrange(_PORT_RANGE[1] - _PORT_RANGE[0] + 1))


def port_range() -> tuple[int, int]:
    """The ports free_port hands out here: the whole range, or in a pytest-xdist worker
    (and the processes it starts, which inherit its environment) the worker's own slice
    of it, so two workers never pick the same port."""
    low, high = _PORT_RANGE
    worker = os.environ.get("PYTEST_XDIST_WORKER", "").removeprefix("gw")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.isdigit() and count.isdigit() and int(worker) < int(count):
        size = (high - low + 1) // int(count)
        low += size * int(worker)
        high = low + size - 1
    return low, high


def free_port() -> int:
    """A loopback TCP port nothing listens on now, in port_range()."""
    low, high = port_range()
    for _ in range(64):
        port = low + next(_picks) % (high - low + 1)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded range: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _etcd_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EtcdServerError("etcd not found: apt-get install etcd-server")
    return path


@dataclass(frozen=True)
class EtcdTls:
    """PEM files of one member: its server certificate, the CA its clients (and peers)
    must be signed by, a client certificate for health checks, and optionally a peer
    certificate (then members talk to each other over TLS, each checking the other's)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    client_cert_file: Path
    client_key_file: Path
    peer_cert_file: Path | None = None
    peer_key_file: Path | None = None

    @classmethod
    def generate(
        cls,
        directory: Path,
        addresses: Sequence[str] = ("127.0.0.1",),
        client_name: str = "root",
        peer: bool = False,
        authority: Authority | None = None,
        name: str = "server",
    ) -> EtcdTls:
        """A server certificate for ADDRESSES (and localhost), a client certificate whose
        CN is CLIENT_NAME (the etcd user it acts as) and, with PEER, a peer certificate;
        signed by AUTHORITY, or by a new throwaway CA made in DIRECTORY."""
        ca = authority or Authority.create(directory, "ca")
        ips = ["127.0.0.1", *addresses]
        server = ca.issue(directory, name, Usage.SERVER, addresses=ips, dns_names=["localhost"])
        client = ca.issue(directory, f"{name}-client", Usage.CLIENT, common_name=client_name)
        peer_cred = ca.issue(directory, f"{name}-peer", Usage.PEER, addresses=ips) if peer else None
        return cls(
            ca.cert_file,
            server.cert_file,
            server.key_file,
            client.cert_file,
            client.key_file,
            peer_cred.cert_file if peer_cred else None,
            peer_cred.key_file if peer_cred else None,
        )


@dataclass
class EtcdServer:
    """A local etcd on free ports with its own data dir; stop() removes both.

    With `initial_cluster` set it is one member of a cluster (see EtcdCluster);
    otherwise a single-member cluster of its own.
    """

    binary: str = "etcd"
    data_dir: Path | None = None
    client_port: int = 0
    peer_port: int = 0
    log_path: Path | None = None
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _owns_dir: bool = field(default=False, repr=False)
    name: str = "fleetpy-test"
    initial_cluster: str | None = None
    cluster_token: str = "etcd-cluster"
    tls: EtcdTls | None = None  # clients then need https and a client certificate
    host: str = "127.0.0.1"  # the address clients reach it at (also listens on loopback)
    detach: bool = False  # outlive this process (a long-lived cluster)

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.client_port}"

    @property
    def listen_urls(self) -> str:
        local = self.endpoint.replace(f"//{self.host}:", "//127.0.0.1:")
        return self.endpoint if local == self.endpoint else f"{self.endpoint},{local}"

    @property
    def peer_url(self) -> str:
        scheme = "https" if self.tls and self.tls.peer_cert_file else "http"
        return f"{scheme}://127.0.0.1:{self.peer_port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.endpoint}/metrics"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def prepare(self) -> None:
        """Pick the data dir and ports (kept across restarts)."""
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="fleetpy-etcd-"))
            self._owns_dir = True
        self.client_port = self.client_port or free_port()
        self.peer_port = self.peer_port or free_port()
        self.log_path = self.log_path or self.data_dir.with_suffix(".log")

    def launch(self) -> None:
        """Start the process without waiting for it (members of a cluster start together)."""
        path = _etcd_binary(self.binary)
        self.prepare()
        assert self.data_dir is not None and self.log_path is not None
        argv = [
            path,
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir / "data"),
            "--listen-client-urls",
            self.listen_urls,
            "--advertise-client-urls",
            self.endpoint,
            "--listen-peer-urls",
            self.peer_url,
            "--initial-advertise-peer-urls",
            self.peer_url,
            "--initial-cluster",
            self.initial_cluster or f"{self.name}={self.peer_url}",
            "--initial-cluster-token",
            self.cluster_token,
            "--log-level",
            "warn",
            *self.extra_args,
        ]
        if self.tls:
            argv += [
                "--cert-file",
                str(self.tls.cert_file),
                "--key-file",
                str(self.tls.key_file),
                "--trusted-ca-file",
                str(self.tls.ca_file),
                "--client-cert-auth",
            ]
            if self.tls.peer_cert_file and self.tls.peer_key_file:
                argv += [
                    "--peer-cert-file",
                    str(self.tls.peer_cert_file),
                    "--peer-key-file",
                    str(self.tls.peer_key_file),
                    "--peer-trusted-ca-file",
                    str(self.tls.ca_file),
                    "--peer-client-cert-auth",
                ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.detach,
            )

    def _last_log_line(self) -> str:
        """etcd's last words (its log goes with its data dir when it is stopped)."""
        try:
            lines = (
                self.log_path.read_text(errors="replace").strip().splitlines()
                if self.log_path
                else []
            )
        except OSError:
            return "no log"
        return lines[-1][-300:] if lines else "empty log"

    def healthy(self) -> bool:
        """etcd's own /health: this member is up and sees a leader."""
        try:
            with urllib.request.urlopen(
                f"{self.endpoint}/health", timeout=1, context=self._ssl_context()
            ) as response:
                return b"true" in response.read()
        except OSError:
            return False

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=str(self.tls.ca_file))
        context.load_cert_chain(str(self.tls.client_cert_file), str(self.tls.client_key_file))
        return context

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise EtcdServerError(
                    f"etcd exited early ({self._last_log_line()}); see {self.log_path}"
                )
            if self.healthy():
                return
            time.sleep(0.05)
        raise EtcdServerError(f"etcd did not become healthy in {timeout:g}s; see {self.log_path}")

    def start(self, timeout: float = 20.0) -> EtcdServer:
        self.launch()
        try:
            self.wait_healthy(timeout)
        except EtcdServerError:
            self.stop()
            raise
        return self

    def metrics(self, timeout: float = 5.0) -> str:
        with urllib.request.urlopen(
            self.metrics_url, timeout=timeout, context=self._ssl_context()
        ) as response:
            return str(response.read().decode())

    def pause(self) -> None:
        """Make etcd unreachable without losing data (SIGSTOP): connections hang. Returns
        once the process is stopped: the signal is delivered asynchronously, and a loaded
        machine answered a /health request after send_signal had returned."""
        if self.process:
            self.process.send_signal(signal.SIGSTOP)
            stat = Path(f"/proc/{self.process.pid}/stat")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    # Field 3, after the parenthesized command name: T = stopped.
                    if stat.read_text().rpartition(")")[2].split()[0] in ("T", "t"):
                        return
                except OSError:
                    return  # gone: nothing answers either
                time.sleep(0.005)

    def resume(self) -> None:
        if self.process:
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Crash etcd (SIGKILL); data dir and ports stay for restart()."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, timeout: float = 20.0, wait: bool = True) -> None:
        """Start again on the same data dir and ports (stops it first if running)."""
        self._terminate()
        self.launch()
        if wait:
            self.wait_healthy(timeout)

    def _terminate(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused etcd ignores SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stop(self) -> None:
        self._terminate()
        if self._owns_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            if self.log_path and self.log_path.exists():
                self.log_path.unlink()

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class EtcdCluster:
    """N real etcd members on free loopback ports, each with its own data dir.

    `endpoints` lists the client URLs in member order; kill/pause/resume/restart take
    a member index. stop() ends every member and removes the data dirs.
    """

    size: int = 3
    binary: str = "etcd"
    extra_args: tuple[str, ...] = ()
    members: list[EtcdServer] = field(default_factory=list, repr=False)
    base_dir: Path | None = None
    host: str = "127.0.0.1"  # the address clients reach every member at
    detach: bool = False  # members outlive this process
    tls: tuple[EtcdTls, ...] = ()  # one per member: a secure cluster (see EtcdTls)

    @property
    def endpoints(self) -> list[str]:
        return [member.endpoint for member in self.members]

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        _etcd_binary(self.binary)
        self.base_dir = self.base_dir or Path(tempfile.mkdtemp(prefix="fleetpy-etcd-cluster-"))
        token = f"fleetpy-{uuid.uuid4().hex[:12]}"  # a stray peer from another run is refused
        if self.tls and len(self.tls) != self.size:
            raise EtcdServerError(f"{len(self.tls)} TLS settings for {self.size} members")
        self.members = [
            EtcdServer(
                binary=self.binary,
                data_dir=self.base_dir / f"m{i}",
                log_path=self.base_dir / f"m{i}.log",
                extra_args=self.extra_args,
                name=f"m{i}",
                cluster_token=token,
                host=self.host,
                detach=self.detach,
                tls=self.tls[i] if self.tls else None,
            )
            for i in range(self.size)
        ]
        for member in self.members:
            assert member.data_dir is not None
            member.data_dir.mkdir()
            member.prepare()
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        try:
            for member in self.members:
                member.initial_cluster = initial
                member.launch()
            self.wait_healthy(range(self.size), timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(
        self, indexes: Sequence[int] | range | None = None, timeout: float = 30.0
    ) -> None:
        """Wait until the given members (default: all running ones) report healthy."""
        if indexes is None:
            chosen = [member for member in self.members if member.running]
        else:
            chosen = [self.members[i] for i in indexes]
        deadline = time.monotonic() + timeout
        for member in chosen:
            member.wait_healthy(max(0.1, deadline - time.monotonic()))

    def leader(self) -> int | None:
        """Index of the member that leads now (etcd_server_is_leader), None if none does."""
        for index, member in enumerate(self.members):
            if not member.running:
                continue
            try:
                if "\netcd_server_is_leader 1" in "\n" + member.metrics(timeout=1.0):
                    return index
            except OSError:
                continue  # paused or starting
        return None

    def kill(self, index: int) -> None:
        self.members[index].kill()

    def pause(self, index: int) -> None:
        self.members[index].pause()

    def resume(self, index: int) -> None:
        self.members[index].resume()

    def restart(self, index: int, timeout: float = 30.0) -> None:
        self.members[index].restart(timeout)

    def stop(self) -> None:
        for member in self.members:
            member.stop()  # members do not own their dirs: base_dir goes below
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
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
