"""CoreOS-like fleetpy hosts on this machine: systemd-nspawn containers that
boot real systemd from one cached Debian rootfs (end-to-end tests, benchmarks, the
demo). Needs root; imports nothing from pytest.

API:
  ensure_rootfs(cache_dir=DEFAULT_CACHE_DIR) -> Path
  runtime_dependencies() -> list[str]
  build_wheels(dest, requirements=runtime_dependencies(), project=None) -> Path
  start_host(rootfs, name, *, machine_id=None, etcd_endpoints=..., metadata=None,
             ttl=None, public_ip=None, etcd_prefix=None, unit_dir=None,
             extra_config=None, package_dir=PACKAGE_DIR, state_dir=None, network=SharedNetwork(),
             docker=True, detach=False, boot_timeout=90.0) -> Host
  launch_host(...same...) -> Host          (no wait; then Host.wait_booted())
  Host.run(argv, check=True, timeout=60.0, input=None) -> CompletedProcess[str]
  Host.systemctl(*args, check=True), .is_active(unit), .show(unit, prop),
      .main_pid(unit), .journal(unit=None, lines=200), .processes(),
      .restart_agent(), .kill(), .stop(timeout=30.0), .alive
  Host.power_off(hard=False, keep_containers=False), .boot(timeout=90.0),
      .reboot(hard=False, keep_containers=False, timeout=90.0): the same host again
  HostPool(rootfs, state_root, ...): .start(count, metadata=..., each=...) -> list[Host],
      .close(); a context manager that ends every host it started

A host's disk is its state dir: /etc/fleetpy (agent.yaml) and /var/lib/fleetpy (the
agent's instance token) survive a reboot; everything else it writes (the rootfs's
overlay, /run) starts empty at every boot. A host's process is its keeper (keeper_argv),
which boots it again when its guest asks for a reboot (`systemctl reboot` inside: nspawn
exits 133), as systemd-nspawn@.service does; Host follows it into the new boot.
  ensure_dockerd(log_path=...) -> bool, ensure_busybox_image(tag) -> str

Hosts share this machine's network (SharedNetwork); HostNetwork is the seam
for hosts on addresses of their own.

Everything read here comes from the installed package (fleetpy/share/ and the
distribution's metadata), never from a checkout: a pip-installed fleetpy makes hosts too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import io
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from fleetpy import hostfiles
from fleetpy.cluster.keeper import Boot, current_boot, end_keeper, keeper_argv, process_state
from fleetpy.errors import FleetpyError

# This fleetpy's package directory: hosts bind it and import it from there.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_CACHE_DIR = Path("/var/cache/fleetpy")
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
ROOTFS_PYTHON = (3, 11)  # bookworm's python3: the wheels must match it
AGENT_UNIT = hostfiles.UNIT
DEFAULT_ETCD_ENDPOINTS = ("http://127.0.0.1:2379",)
BUSYBOX_IMAGE = "local/busybox:latest"
DOCKER_SOCKET = Path("/var/run/docker.sock")
PENDING_CONFIG = "agent.yaml.pending"  # a host launched with agent=False: its agent's config

# Paths inside a host; the same names are used by provision.sh.
_HOST_SOURCE = "/opt/fleetpy/src/fleetpy"
_HOST_PROVISION = "/mnt/fleetpy-provision"
# nsenter'd commands must not inherit the caller's environment (venv, pip
# settings, pytest variables).
_HOST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}
_HOSTNAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,62})$")
_MACHINE_ID = re.compile(r"^[0-9a-f]{32}$")


class HostError(FleetpyError):
    """A host, its rootfs or the docker daemon could not be brought up or driven."""


def _log(event: str, **fields: object) -> None:
    parts = " ".join(f"{key}={value}" for key, value in fields.items())
    print(f"nspawn: event={event} {parts}".rstrip(), file=sys.stderr, flush=True)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on PATH: one builder/starter across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log("lock_wait", path=path)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _with_parent(argv: Sequence[str]) -> list[str]:
    """SIGTERM the command when the thread that started it exits, so nothing outlives a
    killed test run (nspawn then powers its host off). setpriv sets the death signal
    and execs: a Python preexec_fn would run after fork() in a process with gRPC's
    threads, which aborts the child now and then."""
    return ["setpriv", "--pdeathsig", "TERM", "--", *argv]


def _wait_for(what: str, ready: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise HostError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# Rootfs


def runtime_dependencies() -> list[str]:
    """fleetpy's runtime requirements (no extras), from the installed distribution's
    metadata: what `pip install fleetpy` installed, with or without a checkout."""
    try:
        requires = importlib.metadata.requires("fleetpy")
    except importlib.metadata.PackageNotFoundError:
        requires = None
    if requires is None:
        raise HostError(
            "fleetpy's distribution metadata is missing: install fleetpy "
            "(pip install . in the checkout) to make hosts"
        )
    return [r for r in requires if "extra" not in r.partition(";")[2]]


def rootfs_key() -> str:
    """Hash of everything baked into the rootfs; a change means a new rootfs."""
    digest = hashlib.sha256()
    parts = [
        hostfiles.read(hostfiles.PROVISION),
        hostfiles.read(hostfiles.UNIT),
        "\n".join(runtime_dependencies()).encode(),
        f"{DEBIAN_SUITE} {platform.machine()}".encode(),
    ]
    for part in parts:
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()[:16]


def build_wheels(
    dest: Path, requirements: Sequence[str] | None = None, project: Path | None = None
) -> Path:
    """Wheels of REQUIREMENTS (default: fleetpy's runtime deps) for the rootfs's python3,
    built here because pip inside a rootfs reaches no index; with PROJECT (a checkout),
    fleetpy's own wheel too (images that install it rather than bind it)."""
    dest.mkdir(parents=True, exist_ok=True)
    if requirements is None:
        requirements = runtime_dependencies()
    if project is not None:
        # fleetpy is pure Python: one wheel fits every interpreter.
        _pip(
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(dest),
            str(project),
        )
    if sys.version_info[:2] == ROOTFS_PYTHON:
        argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(dest)]
    else:
        # Another interpreter here: fetch binary wheels for the rootfs's one.
        version = f"{ROOTFS_PYTHON[0]}{ROOTFS_PYTHON[1]}"
        argv = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--dest",
            str(dest),
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            version,
            "--platform",
            f"manylinux2014_{platform.machine()}",
            "--platform",
            f"manylinux_2_28_{platform.machine()}",
        ]
    _pip(*argv, *requirements)
    return dest


def _pip(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise HostError(
            f"building wheels failed rc={result.returncode}: {result.stderr.strip()[-2000:]}"
        )


def ensure_rootfs(cache_dir: Path = DEFAULT_CACHE_DIR, mirror: str = DEBIAN_MIRROR) -> Path:
    """A provisioned Debian rootfs for hosts, built once per rootfs_key().

    Built in a temp dir and renamed into place, so an interrupted build never
    leaves a usable-looking half rootfs; a lock file makes concurrent callers
    wait for one build. fleetpy itself is not inside: hosts bind its package directory.
    """
    key = rootfs_key()
    final = cache_dir / f"rootfs-{key}"
    if final.is_dir():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / "rootfs.lock"):
        if final.is_dir():  # another process built it while we waited
            return final
        for stale in cache_dir.glob(".build-*"):  # interrupted builds; we hold the lock
            _log("rootfs_remove_stale", path=stale)
            _remove_tree(stale)
        build = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache_dir))
        log_path = cache_dir / f"build-{key}.log"
        started = time.monotonic()
        _log("rootfs_build", key=key, path=final, log=log_path)
        try:
            _build_rootfs(build, mirror, log_path)
            os.rename(build / "rootfs", final)
        finally:
            _remove_tree(build)
        _log("rootfs_built", key=key, path=final, seconds=f"{time.monotonic() - started:.0f}")
    return final


def _build_rootfs(build: Path, mirror: str, log_path: Path) -> None:
    root = build / "rootfs"
    provision = build / "provision"
    provision.mkdir()
    for name in (hostfiles.PROVISION, hostfiles.UNIT):
        (provision / name).write_bytes(hostfiles.read(name))
    build_wheels(provision / "wheels")
    with open(log_path, "w") as log:
        steps = [
            ["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(root), mirror],
            # nspawn without --boot gives apt a proper /proc, /dev and
            # resolv.conf; the inputs are bound, not copied, into the rootfs.
            [
                "systemd-nspawn",
                "--quiet",
                "-D",
                str(root),
                "-M",
                f"fleetpy-build-{build.name.split('-')[1]}",
                "--register=no",
                "--keep-unit",
                f"--bind-ro={provision}:{_HOST_PROVISION}",
                "/bin/bash",
                f"{_HOST_PROVISION}/provision.sh",
                "--wheels",
                f"{_HOST_PROVISION}/wheels",
                "--unit",
                f"{_HOST_PROVISION}/{AGENT_UNIT}",
            ],
        ]
        for argv in steps:
            _log("rootfs_step", cmd=argv[0])
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            # If we die, so does the step: the next builder removes its dir.
            rc = subprocess.run(
                _with_parent(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            ).returncode
            if rc != 0:
                raise HostError(
                    f"rootfs build step {argv[0]} failed rc={rc}, log {log_path}:\n{_tail(log_path)}"
                )
    with contextlib.suppress(OSError):
        (root / _HOST_PROVISION.lstrip("/")).rmdir()  # nspawn's mount point


def _remove_tree(path: Path) -> None:
    """rm -rf that first unmounts whatever a killed debootstrap left mounted
    below PATH, so it never deletes through a mount into /proc or /dev."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------
# Network seam


class HostNetwork(Protocol):
    """How a host is networked. SharedNetwork now; a netns + veth + bridge
    implementation later only has to provide these three methods."""

    def nspawn_args(self, name: str) -> list[str]: ...

    def public_ip(self, name: str) -> str: ...

    def release(self, name: str) -> None: ...


@dataclass(frozen=True)
class SharedNetwork:
    """Every host uses this machine's network namespace: etcd on 127.0.0.1
    is reachable and all hosts have the same address."""

    address: str = "127.0.0.1"

    def nspawn_args(self, name: str) -> list[str]:
        return []

    def public_ip(self, name: str) -> str:
        return self.address

    def release(self, name: str) -> None:
        return None


# --------------------------------------------------------------------------
# Hosts


@dataclass(eq=False)
class Host:
    """One booted host. `run` executes inside it through nsenter."""

    name: str
    machine_id: str
    public_ip: str
    rootfs: Path
    state_dir: Path
    process: subprocess.Popen[bytes]  # its keeper (keeper_argv), which runs systemd-nspawn
    init_pid: int  # the host's systemd, as seen from this machine (this boot's)
    pid_ns: str  # identity of the host's pid namespace, e.g. "pid:[4026532301]"
    network: HostNetwork
    remove_containers: bool = True
    nspawn_pid: int = 0  # this boot's systemd-nspawn
    # How it was booted (systemd-nspawn's argv; detached or not): boot() does it again.
    argv: tuple[str, ...] = ()
    detach: bool = False
    _finished: bool = field(default=False, repr=False)

    @property
    def config_path(self) -> Path:
        """agent.yaml on this machine; it is /etc/fleetpy/agent.yaml inside."""
        return self.state_dir / "etc" / "agent.yaml"

    @property
    def console_log(self) -> Path:
        return self.state_dir / "console.log"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def run(
        self,
        argv: Sequence[str],
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        if not self.alive:
            raise HostError(f"host={self.name} is not running")
        if not self.follow():
            raise HostError(f"host={self.name} is rebooting")
        try:
            result = subprocess.run(
                ["nsenter", "-t", str(self.init_pid), "-a", *argv],
                capture_output=True,
                text=True,
                env=_HOST_ENV,
                timeout=timeout,
                input=input,
            )
        except subprocess.TimeoutExpired as e:
            raise HostError(
                f"host={self.name} argv={list(argv)!r} timed out after {timeout}s"
            ) from e
        if check and result.returncode != 0:
            raise HostError(
                f"host={self.name} argv={list(argv)!r} rc={result.returncode} "
                f"stderr={result.stderr.strip()!r}"
            )
        return result

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", *args], check=check)

    def is_active(self, unit: str) -> bool:
        return self.systemctl("is-active", "--quiet", unit, check=False).returncode == 0

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "--value", "-p", prop, unit).stdout.strip()

    def main_pid(self, unit: str) -> int:
        """The unit's main pid as seen inside the host; 0 when it has none."""
        return int(self.show(unit, "MainPID") or 0)

    def journal(self, unit: str | None = None, lines: int = 200) -> str:
        argv = ["journalctl", "--no-pager", "--quiet", "-o", "short-precise", "-n", str(lines)]
        if unit:
            argv += ["-u", unit]
        return self.run(argv, check=False).stdout

    def restart_agent(self) -> None:
        self.systemctl("restart", AGENT_UNIT)

    def processes(self) -> list[int]:
        """Pids (as seen from this machine) of every live process in the host."""
        pids = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):  # gone, or a zombie
                    if os.readlink(f"/proc/{entry.name}/ns/pid") == self.pid_ns:
                        pids.append(int(entry.name))
        return pids

    def follow(self) -> bool:
        """Follow the host into its current boot (after its guest rebooted, nspawn ran
        again): True if it has one, False between two boots or once it ended."""
        if self._init_is_ours():
            return True
        boot = current_boot(self.process.pid) if self.alive else None
        if boot is None:
            return False
        self.nspawn_pid, self.init_pid, self.pid_ns = boot.nspawn, boot.init, boot.pid_ns
        _log("host_rebooted", name=self.name, init_pid=self.init_pid)
        return True

    def wait_booted(self, timeout: float = 90.0) -> None:
        """Until the host's systemd finished booting ("running" or "degraded"); also after
        a reboot its guest asked for."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if not self.alive:
                raise HostError(
                    f"host={self.name} exited during boot rc={self.process.returncode}, "
                    f"console {self.console_log}:\n{_tail(self.console_log)}"
                )
            if not self.follow():  # between two boots
                time.sleep(0.05)
                continue
            left = max(1.0, deadline - time.monotonic())
            # Fails fast until PID 1 listens on its private bus, then --wait
            # blocks until boot is done.
            result = self.run(
                ["systemctl", "is-system-running", "--wait"], check=False, timeout=left
            )
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                _log("host_booted", name=self.name, state=state)
                return
            if state in ("maintenance", "stopping"):
                break
            time.sleep(0.2)
        raise HostError(
            f"host={self.name} did not boot state={state or 'unknown'}, "
            f"console {self.console_log}:\n{_tail(self.console_log)}"
        )

    def kill(self) -> None:
        """Crash the host: SIGKILL its init, which ends every process in it,
        then nspawn. Killing only nspawn would leave the host's systemd (and
        its agent) running, reparented."""
        self._send_kill()
        self._finish("killed")

    def _send_kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self._init_is_ours():
                os.kill(self.init_pid, signal.SIGKILL)
        if self.alive:
            end_keeper(self.process.pid)

    def stop(self, timeout: float = 30.0) -> None:
        """Clean poweroff; kill() if it takes longer than TIMEOUT."""
        self._power_off(timeout, release=True, containers=self.remove_containers)

    def power_off(
        self, hard: bool = False, keep_containers: bool = False, timeout: float = 30.0
    ) -> None:
        """Switch the host off to boot() it again later: cleanly, as `systemctl poweroff`
        (its units stopped by its systemd), or HARD, a crash (kill()). It keeps its network
        and its disk. Its containers are removed, since a real machine's die with it,
        unless KEEP_CONTAINERS: here every host shares this machine's dockerd, so they
        could outlive it (what a unit must then cope with when it starts again)."""
        if hard:
            self._send_kill()
            self._finish("killed", release=False, containers=not keep_containers)
        else:
            self._power_off(timeout, release=False, containers=not keep_containers)

    def boot(self, timeout: float = 90.0) -> None:
        """Boot the host again after power_off() (or stop(), kill() on a SharedNetwork):
        the same rootfs, name, machine id, agent config and /var/lib/fleetpy; its overlay
        and /run start empty, as a real machine's /run does."""
        if self.alive:
            raise HostError(f"host={self.name} is running: power it off first")
        if not self.argv:
            raise HostError(f"host={self.name} was not started by launch_host: cannot boot it")
        self.process, boot = _spawn(self.name, self.state_dir, self.detach, *self.argv)
        self.nspawn_pid, self.init_pid, self.pid_ns = boot.nspawn, boot.init, boot.pid_ns
        self._finished = False
        _log("host_launched", name=self.name, machine_id=self.machine_id, init_pid=self.init_pid)
        self.wait_booted(timeout)

    def reboot(
        self, hard: bool = False, keep_containers: bool = False, timeout: float = 90.0
    ) -> None:
        """power_off(HARD, KEEP_CONTAINERS) then boot(TIMEOUT): `systemctl reboot`, or
        with HARD a crashed machine powered on again."""
        self.power_off(hard, keep_containers)
        self.boot(timeout)

    def _power_off(self, timeout: float, release: bool, containers: bool) -> None:
        if self.alive and not self.follow():  # between two boots: nothing to shut down
            self._send_kill()
            self._finish("killed", release, containers)
            return
        if self.alive:
            os.kill(self.init_pid, signal.SIGRTMIN + 4)  # systemd: start poweroff.target
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _log("host_stop_timeout", name=self.name, seconds=timeout)
                self._send_kill()
                self._finish("killed", release, containers)
                return
        self._finish("stopped", release, containers)

    def _init_is_ours(self) -> bool:
        # After the host ended its pid may belong to another process.
        try:
            return os.readlink(f"/proc/{self.init_pid}/ns/pid") == self.pid_ns
        except OSError:
            return False

    def _finish(self, how: str, release: bool = True, containers: bool | None = None) -> None:
        if self._finished:
            return
        self.process.wait(timeout=30)
        _wait_for(
            f"host {self.name}'s processes to exit",
            lambda: not self.processes() and process_state(self.nspawn_pid) in ("", "Z", "X"),
            30,
        )
        self._finished = True
        # All hosts share this machine's dockerd, so a host's containers would
        # outlive it; a dead machine's containers are dead too.
        if self.remove_containers if containers is None else containers:
            remove_host_containers(self.name, self.machine_id)
        if release:
            self.network.release(self.name)
        _log("host_ended", name=self.name, how=how, rc=self.process.returncode)


def _write_host_state(
    state_dir: Path, name: str, machine_id: str, config: Mapping[str, object], agent: bool = True
) -> None:
    (state_dir / "etc").mkdir(parents=True, exist_ok=True)
    (state_dir / "var-lib-fleetpy").mkdir(exist_ok=True)
    (state_dir / "machine-id").write_text(machine_id + "\n")
    # The agent's unit starts only if agent.yaml exists (ConditionPathExists).
    (state_dir / "etc" / ("agent.yaml" if agent else PENDING_CONFIG)).write_text(
        f"# written by fleetpy.cluster.nspawn for host {name}\n"
        + yaml.safe_dump(dict(config), sort_keys=False)
    )


def launch_host(
    rootfs: Path,
    name: str,
    *,
    machine_id: str | None = None,
    etcd_endpoints: Sequence[str] = DEFAULT_ETCD_ENDPOINTS,
    metadata: Mapping[str, str] | None = None,
    ttl: int | None = None,
    public_ip: str | None = None,
    etcd_prefix: str | None = None,
    unit_dir: str | None = None,
    extra_config: Mapping[str, object] | None = None,
    package_dir: Path | None = PACKAGE_DIR,
    state_dir: Path | None = None,
    network: HostNetwork = SharedNetwork(),
    docker: bool = True,
    detach: bool = False,
    binds: Sequence[tuple[Path, str]] = (),
    agent: bool = True,
) -> Host:
    """Start booting a host and return once its init exists (see wait_booted).

    The keyword settings become the host's /etc/fleetpy/agent.yaml (None:
    left to the agent's default); extra_config adds other agent settings
    (e.g. request_timeout, ca_file).
    package_dir: the fleetpy package bound read-only into the host, PACKAGE_DIR (this
    fleetpy, installed or a checkout's) by default; None: the rootfs has fleetpy
    installed, as a packer image does.
    detach: the host outlives this process (a long-lived cluster); otherwise it is
    powered off when the thread that launched it exits.
    agent: False boots the host with fleetpy's agent off: its config is written to
    /etc/fleetpy/agent.yaml.pending, for a test to move into place (a host that runs
    something else first, e.g. fleetd, until fleetpy takes it over).
    """
    if not _HOSTNAME.match(name):
        raise HostError(f"invalid host name {name!r}: letters, digits and '-', at most 63")
    machine_id = machine_id or secrets.token_hex(16)
    if not _MACHINE_ID.match(machine_id):
        raise HostError(f"invalid machine id {machine_id!r}: 32 lowercase hex digits")
    state_dir = state_dir or Path(tempfile.mkdtemp(prefix=f"fleetpy-host-{name}-"))
    public_ip = public_ip or network.public_ip(name)
    config: dict[str, object] = {
        "endpoint": ",".join(etcd_endpoints),
        "public_ip": public_ip,
        "metadata": dict(metadata or {}),
    }
    for key, value in (("etcd_prefix", etcd_prefix), ("ttl", ttl), ("unit_dir", unit_dir)):
        if value is not None:
            config[key] = value
    config.update(extra_config or {})
    _write_host_state(state_dir, name, machine_id, config, agent)

    argv = [
        "systemd-nspawn",
        "-D",
        str(rootfs),
        "-M",
        name,
        "--boot",
        # No systemd as PID 1 on this machine to register with or to
        # create a scope for the host.
        "--register=no",
        "--keep-unit",
        # Hosts share the rootfs read-only; writes go to a tmpfs.
        "--volatile=overlay",
        f"--hostname={name}",
        f"--uuid={machine_id}",
        f"--bind-ro={state_dir / 'machine-id'}:/etc/machine-id",
        f"--bind={state_dir / 'etc'}:/etc/fleetpy",
        # The agent's instance token: kept across reboots, as on a real machine's disk.
        f"--bind={state_dir / 'var-lib-fleetpy'}:/var/lib/fleetpy",
        "--console=read-only",
        *network.nspawn_args(name),
    ]
    if package_dir is not None:
        argv.append(f"--bind-ro={package_dir}:{_HOST_SOURCE}")
    argv += [f"--bind-ro={path}:{target}" for path, target in binds]
    if docker:
        docker_cli = shutil.which("docker")
        if not docker_cli or not DOCKER_SOCKET.exists():
            raise HostError(
                "docker CLI or socket missing: call ensure_dockerd() before starting hosts"
            )
        # The socket is bound by inode: dockerd must not restart while hosts run.
        argv += [f"--bind={DOCKER_SOCKET}", f"--bind-ro={docker_cli}:/usr/bin/docker"]

    process, boot = _spawn(name, state_dir, detach, *argv)
    _log(
        "host_launched",
        name=name,
        machine_id=machine_id,
        keeper_pid=process.pid,
        nspawn_pid=boot.nspawn,
        init_pid=boot.init,
        state_dir=state_dir,
    )
    return Host(
        name=name,
        machine_id=machine_id,
        public_ip=public_ip,
        rootfs=rootfs,
        state_dir=state_dir,
        process=process,
        init_pid=boot.init,
        pid_ns=boot.pid_ns,
        nspawn_pid=boot.nspawn,
        network=network,
        argv=tuple(argv),
        detach=detach,
    )


def _spawn(
    name: str, state_dir: Path, detach: bool, *argv: str
) -> tuple[subprocess.Popen[bytes], Boot]:
    """Run systemd-nspawn ARGV under a keeper; (the keeper's process, the host's boot)
    once its init exists."""
    with open(state_dir / "console.log", "ab") as console:
        process = subprocess.Popen(
            keeper_argv(_with_parent(argv))
            if detach
            else _with_parent(keeper_argv(_with_parent(argv))),
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
        )
    try:
        boot: Boot | None = None

        def found_init() -> bool:
            nonlocal boot
            if process.poll() is not None:
                raise HostError(
                    f"host={name} nspawn exited rc={process.returncode}, "
                    f"console {state_dir / 'console.log'}:\n{_tail(state_dir / 'console.log')}"
                )
            boot = current_boot(process.pid)
            return boot is not None

        _wait_for(f"host {name}'s init", found_init, 30, interval=0.05)
    except BaseException:
        if process.poll() is None:
            end_keeper(process.pid)
        process.wait()
        raise
    assert boot is not None
    return process, boot


def start_host(rootfs: Path, name: str, *, boot_timeout: float = 90.0, **options: Any) -> Host:
    """launch_host(rootfs, name, **options), then wait until its systemd is up."""
    host = launch_host(rootfs, name, **options)
    try:
        host.wait_booted(boot_timeout)
    except BaseException:
        host.kill()
        raise
    return host


@dataclass
class HostPool:
    """Starts hosts and ends all of them on close(), also when a test failed.

    Host names are NAME_PREFIX + a counter; the random prefix keeps names (and
    so container names) unique among pools sharing this machine's dockerd.
    """

    rootfs: Path
    state_root: Path
    etcd_endpoints: Sequence[str] = DEFAULT_ETCD_ENDPOINTS
    package_dir: Path | None = PACKAGE_DIR
    network: HostNetwork = field(default_factory=SharedNetwork)
    name_prefix: str = field(default_factory=lambda: f"fp{secrets.token_hex(2)}-h")
    hosts: list[Host] = field(default_factory=list)

    def start(
        self,
        count: int = 1,
        *,
        metadata: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
        each: Sequence[Mapping[str, Any]] | None = None,
        boot_timeout: float = 90.0,
        **options: Any,
    ) -> list[Host]:
        """Boot COUNT hosts in parallel. METADATA: one mapping for all, or one per host;
        EACH: one mapping of launch_host options per host, over OPTIONS (e.g. a ttl each)."""
        if metadata is None or isinstance(metadata, Mapping):
            per_host = [metadata or {}] * count
        else:
            per_host = list(metadata)
            if len(per_host) != count:
                raise HostError(f"{len(per_host)} metadata mappings for {count} hosts")
        own = list(each) if each is not None else [{}] * count
        if len(own) != count:
            raise HostError(f"{len(own)} option mappings for {count} hosts")
        started = []
        for host_metadata, host_options in zip(per_host, own):
            name = f"{self.name_prefix}{len(self.hosts) + 1}"
            host = launch_host(
                self.rootfs,
                name,
                metadata=host_metadata,
                etcd_endpoints=self.etcd_endpoints,
                package_dir=self.package_dir,
                state_dir=self.state_root / name,
                network=self.network,
                **{**options, **host_options},
            )
            self.hosts.append(host)
            started.append(host)
        deadline = time.monotonic() + boot_timeout
        for host in started:  # they boot concurrently; wait for each in turn
            host.wait_booted(max(1.0, deadline - time.monotonic()))
        return started

    def close(self, clean: bool = False) -> None:
        """Kill (or, if CLEAN, power off) every host; raise the first failure after trying all."""
        errors: list[BaseException] = []
        if not clean:
            # The kernel takes a second or two to tear a pid namespace down:
            # let all hosts die at once, then collect them one by one.
            for host in self.hosts:
                host._send_kill()
        for host in reversed(self.hosts):
            try:
                if clean:
                    host.stop()
                else:
                    host.kill()
            except Exception as e:  # keep going: the other hosts must end too
                _log("host_end_failed", name=host.name, error=repr(e))
                errors.append(e)
        self.hosts.clear()
        if errors:
            raise errors[0]

    def __enter__(self) -> HostPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------
# Docker


def _docker_ok() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return (
            subprocess.run(
                ["docker", "info", "--format", "{{.ServerVersion}}"],
                capture_output=True,
                timeout=15,
            ).returncode
            == 0
        )
    except subprocess.TimeoutExpired:
        return False


def ensure_dockerd(
    log_path: Path = Path("/var/log/fleetpy-dockerd.log"),
    stall: float = 60.0,
    limit: float = 900.0,
) -> bool:
    """Start dockerd if `docker info` fails; True if it was started here.

    It runs detached and stays up: hosts bind its socket, and a dockerd
    restarted under running hosts would leave them a dead socket.

    A dockerd that was killed with containers running removes their stale
    network sandboxes at its next start, ~0.1 s each: hundreds of them took
    76 s here. So it is given up on only when its log stops growing for
    STALL seconds (or after LIMIT), not after a fixed time.
    """
    if _docker_ok():
        return False
    with _locked(Path("/run/fleetpy-dockerd.lock")):
        if _docker_ok():
            return False
        if not shutil.which("dockerd"):
            raise HostError("dockerd not found: apt-get install docker.io")
        argv = ["dockerd", "--iptables=false", "--bridge=none", "--storage-driver=vfs"]
        _log("dockerd_start", log=log_path)
        with open(log_path, "ab") as log:
            # setsid --fork: a daemon, not our child, so nothing waits on it.
            subprocess.run(
                ["setsid", "--fork", *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
        _wait_while_logging("dockerd", _docker_ok, log_path, stall, limit)
    return True


def _wait_while_logging(
    what: str, ready: Callable[[], bool], log_path: Path, stall: float, limit: float
) -> None:
    start = last_growth = time.monotonic()
    size = -1
    while not ready():
        now = time.monotonic()
        grown = log_path.stat().st_size if log_path.exists() else 0
        if grown != size:
            size, last_growth = grown, now
        if now - last_growth > stall or now - start > limit:
            raise HostError(
                f"timed out after {now - start:.0f}s waiting for {what} "
                f"(its log silent for {now - last_growth:.0f}s); "
                f"log {log_path}:\n{_tail(log_path)}"
            )
        time.sleep(0.3)


def remove_host_containers(hostname: str, machine_id: str) -> list[str]:
    """Remove containers whose name carries HOSTNAME or MACHINE_ID as a
    '-', '_' or '.' separated token (the naming convention for containers
    units run, since all hosts share one dockerd)."""
    if not _docker_ok():
        return []
    names = subprocess.run(
        ["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True
    ).stdout.split()
    token = re.compile(rf"(?:^|[-_.])(?:{re.escape(hostname)}|{machine_id})(?:$|[-_.])")
    doomed = [n for n in names if token.search(n)]
    if doomed:
        subprocess.run(["docker", "rm", "-f", *doomed], capture_output=True)
        _log("containers_removed", host=hostname, names=",".join(doomed))
    return doomed


def _is_static_elf(path: Path) -> bool:
    """True if PATH has no PT_INTERP program header (needs no dynamic loader)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:  # 64-bit little-endian only
        return False
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    types = (
        int.from_bytes(data[phoff + i * phentsize : phoff + i * phentsize + 4], "little")
        for i in range(phnum)
    )
    return 3 not in types  # PT_INTERP


def ensure_busybox_image(tag: str = BUSYBOX_IMAGE) -> str:
    """A busybox image made from this machine's static busybox (no registry
    is reachable); imported only if TAG is missing. Returns TAG."""
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0:
        return tag
    found = shutil.which("busybox")
    busybox = Path(found).resolve() if found else None
    if busybox is None or not _is_static_elf(busybox):
        raise HostError("a static busybox is needed: apt-get install busybox-static")
    applets = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        for name in (
            "bin",
            "sbin",
            "usr",
            "usr/bin",
            "usr/sbin",
            "etc",
            "proc",
            "sys",
            "dev",
            "root",
        ):
            add_dir(name)
        add_dir("tmp", 0o1777)
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            if applet != "bin/busybox":
                info = tarfile.TarInfo(applet)
                info.type, info.linkname = tarfile.SYMTYPE, "/bin/busybox"
                tar.addfile(info)
    result = subprocess.run(
        ["docker", "import", "--change", 'CMD ["/bin/sh"]', "-", tag],
        input=archive.getvalue(),
        capture_output=True,
    )
    if result.returncode != 0:
        raise HostError(
            f"docker import {tag} failed: {result.stderr.decode(errors='replace').strip()}"
        )
    _log("image_imported", tag=tag, applets=len(applets))
    return tag
