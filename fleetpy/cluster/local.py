"""`fleetpy cluster up|status|down`: a whole cluster on this machine (root).

etcd (one member, or three), two engines, and N CoreOS-like hosts, each in its own
network namespace with its own address on a bridge the cluster makes (see network.py),
booting real systemd with sshd, the docker CLI (this machine's dockerd) and the agent.

With `secure`, etcd speaks only TLS (clients and peers, each side checking the other's
certificate) with its auth on: fleetpy's roles (registry/access.py), and every client
acts as its own etcd user through its certificate's CN: the engines as fleetpy-engine,
each host's agent as fleetpy-agent-<its machine id> (its files in the host's
/etc/fleetpy, mode 0600), the operator (the env file) as fleetpy-operator. The
certificates live in the cluster's directory, so `down` removes them with it.

Everything `up` makes is written to the cluster's state file *before* it is made, so
`down` removes exactly that (processes, namespaces, links, the bridge, containers, the
cluster's directory) and nothing else, also after an `up` that crashed half-way. `down`
always goes through the whole list: what is gone already (a host that died, a veth that
went with its namespace, a killed etcd) counts as removed, and what can't be removed is
reported at the end, with the state kept for another `down`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import FleetpyError
from ..registry import Registry, RegistryConfig
from .credentials import ClusterCredentials
from .etcd import EtcdCluster, EtcdServer
from .keeper import current_boot, freeze_keeper, is_keeper
from .network import CLUSTER_NAME, DEFAULT_SUBNET, BridgeNetwork, remove_link, remove_netns
from .nspawn import (
    Host,
    ensure_busybox_image,
    ensure_dockerd,
    ensure_rootfs,
    launch_host,
    remove_host_containers,
)

STATE_ROOT = Path("/run/fleetpy/clusters")
CLUSTER_MARK = "FLEETPY_LOCAL_CLUSTER"  # in the environment of the engines up starts
SSH_USER = "root"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"  # a host's, bound from its state dir
RACKS = ("r1", "r2", "r3")


class ClusterError(FleetpyError):
    """A local cluster could not be made, found or removed."""


@dataclass
class ProcessRecord:
    """A process the cluster started, told apart from a later one with the same pid."""

    pid: int
    started: str  # field 22 of /proc/PID/stat: the start time in clock ticks
    log: str = ""

    @classmethod
    def of(cls, pid: int, log: str = "") -> ProcessRecord:
        return cls(pid, _start_time(pid), log)

    def alive(self) -> bool:
        # A zombie is dead: when up ran in this process (tests, bench), its children
        # stay zombies until reaped, so reap them here too.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, os.WNOHANG)
        return _start_time(self.pid) == self.started != ""


@dataclass
class HostRecord:
    name: str
    index: int
    machine_id: str = ""
    address: str = ""
    netns: str = ""
    veth: str = ""
    state_dir: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    nspawn: ProcessRecord | None = None  # its first boot's; current_init() finds a later one
    init: ProcessRecord | None = None
    pid_ns: str = ""
    keeper: ProcessRecord | None = None  # boots it again after a reboot (nspawn.keeper_argv)


@dataclass
class ClusterState:
    name: str
    subnet: str
    directory: str
    bridge: str = ""
    etcd: list[ProcessRecord] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    engines: list[ProcessRecord] = field(default_factory=list)
    hosts: list[HostRecord] = field(default_factory=list)
    identity: str = ""
    known_hosts: str = ""
    env_file: str = ""
    up_seconds: float = 0.0
    pki: str = ""  # a secure cluster's certificates (inside directory)
    operator_tls: dict[str, str] = field(default_factory=dict)  # FLEETPY_* of the CLI

    @property
    def path(self) -> Path:
        return Path(self.directory) / "state.json"

    def save(self) -> None:
        temp = self.path.with_suffix(".tmp")
        temp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(temp, self.path)

    @classmethod
    def load(cls, name: str) -> ClusterState:
        path = _directory(name) / "state.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ClusterError(f"no local cluster named {name} (fleetpy cluster up)") from None
        except (OSError, ValueError) as exc:
            raise ClusterError(f"cannot read {path}: {exc}") from None

        def process(value: Any) -> ProcessRecord | None:
            return ProcessRecord(**value) if value else None

        hosts = [
            HostRecord(
                **{k: v for k, v in h.items() if k not in ("nspawn", "init", "keeper")},
                nspawn=process(h.get("nspawn")),
                init=process(h.get("init")),
                keeper=process(h.get("keeper")),
            )
            for h in data.pop("hosts", [])
        ]
        etcd = [ProcessRecord(**p) for p in data.pop("etcd", [])]
        engines = [ProcessRecord(**p) for p in data.pop("engines", [])]
        return cls(**data, hosts=hosts, etcd=etcd, engines=engines)


def _directory(name: str) -> Path:
    """The cluster's directory; NAME is checked first, as it becomes part of the path."""
    if not CLUSTER_NAME.fullmatch(name):
        raise ClusterError(
            f"invalid cluster name {name!r}: 1 to 8 lowercase letters and digits, "
            "starting with a letter"
        )
    return STATE_ROOT / name


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()
    return "" if fields[0] == "Z" else fields[19]


def _require_root() -> None:
    if os.geteuid() != 0:
        raise ClusterError("a local cluster needs root (network namespaces, systemd-nspawn)")


# ----------------------------------------------------------------------------- up


def up(
    name: str = "fleetpy",
    hosts: int = 3,
    etcd_members: int = 1,
    subnet: str = DEFAULT_SUBNET,
    ttl: int = 5,
    metadata: Sequence[Mapping[str, str]] | None = None,
    log: Any = None,
    secure: bool = False,
) -> ClusterState:
    """Make the cluster; returns its state once every host is registered in etcd.
    A failure leaves what was made for `down` (and its logs to read): the error says so.
    secure: TLS and etcd's auth with a role per kind of client (module docstring)."""
    _require_root()
    say = log or (lambda message: None)
    if etcd_members not in (1, 3):
        raise ClusterError("--etcd-members is 1 or 3")
    if not 1 <= hosts <= 200:
        raise ClusterError("--hosts is 1 to 200")
    try:
        network = BridgeNetwork(name, ipaddress.IPv4Network(subnet))
    except ValueError as exc:
        raise ClusterError(f"invalid --subnet {subnet!r}: {exc}") from None
    directory = STATE_ROOT / name
    try:
        directory.mkdir(parents=True)
    except FileExistsError:
        raise ClusterError(
            f"a local cluster named {name} is up already (or its remains are): "
            f"fleetpy cluster down --name {name}"
        ) from None
    state = ClusterState(name, str(network.subnet), str(directory))
    state.save()
    try:
        return _make(state, network, hosts, etcd_members, ttl, metadata, say, secure)
    except (FleetpyError, OSError, subprocess.SubprocessError) as exc:
        detail = " ".join(str(exc).split())[-500:] or type(exc).__name__
        raise ClusterError(
            f"cluster {name} failed half-way: {detail} (logs in {directory}; "
            f"fleetpy cluster down --name {name} removes what was made)"
        ) from None


def _make(
    state: ClusterState,
    network: BridgeNetwork,
    hosts: int,
    etcd_members: int,
    ttl: int,
    metadata: Sequence[Mapping[str, str]] | None,
    say: Any,
    secure: bool = False,
) -> ClusterState:
    name, directory = state.name, Path(state.directory)
    started = time.monotonic()
    # Machine ids are chosen here, not at boot: each agent's certificate names its own.
    machine_ids = [secrets.token_hex(16) for _ in range(hosts)]

    say("preparing dockerd, the busybox image and the host image (cached after the first run)")
    ensure_dockerd()
    ensure_busybox_image()
    rootfs = ensure_rootfs()

    state.bridge = network.bridge
    state.save()
    network.create()

    creds: ClusterCredentials | None = None
    if secure:
        say("making a CA and certificates for etcd, the engines, the agents and you")
        state.pki = str(directory / "pki")
        state.save()
        creds = ClusterCredentials.create(
            Path(state.pki), etcd_members, [network.gateway], machine_ids
        )
        state.operator_tls = creds.settings(creds.operator)
        state.save()

    say(f"starting etcd ({etcd_members} member{'s' if etcd_members > 1 else ''})")
    etcd_dir = directory / "etcd"
    members: list[EtcdServer]
    if etcd_members == 1:
        server = EtcdServer(
            data_dir=etcd_dir,
            log_path=directory / "etcd.log",
            host=network.gateway,
            detach=True,
            tls=creds.members[0] if creds else None,
        )
        etcd_dir.mkdir()
        server.launch()
        members = [server]
    else:
        cluster = EtcdCluster(
            3,
            base_dir=etcd_dir,
            host=network.gateway,
            detach=True,
            tls=creds.members if creds else (),
        )
        etcd_dir.mkdir()
        cluster.start()
        members = cluster.members
    state.etcd = [ProcessRecord.of(m.process.pid, str(m.log_path)) for m in members if m.process]
    state.endpoints = [m.endpoint for m in members]
    state.save()
    for member in members:
        member.wait_healthy(30)
    if creds is not None:
        say("making etcd's users and roles, turning its auth on")
        with Registry(creds.config(creds.root, state.endpoints)) as root:
            root.ensure_access(machine_ids)

    say("making an ssh key for the hosts")
    ssh_dir = directory / "ssh"
    ssh_dir.mkdir()
    identity = ssh_dir / "id_ed25519"
    _ssh_keygen(identity, f"fleetpy-{name}")
    state.identity = str(identity)
    state.known_hosts = str(ssh_dir / "known_hosts")
    state.save()

    say(f"booting {hosts} host{'s' if hosts > 1 else ''} on {network.subnet}")
    launched: list[Host] = []
    for index in range(1, hosts + 1):
        host_name = f"{name}-h{index}"
        record = HostRecord(
            host_name,
            index,
            netns=network.netns(host_name),
            veth=f"fpv{name}{index}",
            state_dir=str(directory / "hosts" / host_name),
            metadata=dict(
                metadata[index - 1]
                if metadata
                else {"rack": RACKS[(index - 1) % len(RACKS)], "role": "worker"}
            ),
        )
        state.hosts.append(record)
        state.save()
        record.address = network.add_host(host_name, index)
        machine_id = machine_ids[index - 1]
        # Its ssh host key, made here once: its /etc starts afresh at every boot, and a key
        # its sshd made at each boot would be another machine's to ssh after a reboot.
        host_key = Path(record.state_dir) / "ssh" / "ssh_host_ed25519_key"
        host_key.parent.mkdir(parents=True)
        _ssh_keygen(host_key, f"root@{host_name}")
        agent_tls = creds.install_agent(machine_id, Path(record.state_dir) / "etc") if creds else {}
        host = launch_host(
            rootfs,
            host_name,
            machine_id=machine_id,
            extra_config=agent_tls,
            etcd_endpoints=state.endpoints,
            metadata=record.metadata,
            ttl=ttl,
            public_ip=record.address,
            network=network,
            state_dir=Path(record.state_dir),
            detach=True,
            binds=[
                (Path(f"{identity}.pub"), "/root/.ssh/authorized_keys"),
                (host_key, HOST_KEY),
                (Path(f"{host_key}.pub"), f"{HOST_KEY}.pub"),
            ],
        )
        record.machine_id = host.machine_id
        record.keeper = ProcessRecord.of(host.process.pid, str(host.console_log))
        record.nspawn = ProcessRecord.of(host.nspawn_pid)
        record.init = ProcessRecord.of(host.init_pid)
        record.pid_ns = host.pid_ns
        state.save()
        launched.append(host)
    for host in launched:
        host.wait_booted(120)
    _write_known_hosts(state, launched)

    say("starting two engines")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
    env["FLEETPY_ENDPOINT"] = ",".join(state.endpoints)
    env[CLUSTER_MARK] = name  # lets `down` find an engine that crashed `up` did not record
    if creds is not None:
        env.update(creds.settings(creds.engine))
    for number in (1, 2):
        log_path = directory / f"engine{number}.log"
        with open(log_path, "ab") as engine_log:
            process = subprocess.Popen(
                [sys.executable, "-m", "fleetpy", "engine", "--lease-ttl", str(ttl)],
                env=env,
                stdout=engine_log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        state.engines.append(ProcessRecord.of(process.pid, str(log_path)))
        state.save()

    _wait_registered(state, hosts)
    state.env_file = str(directory / "env")
    Path(state.env_file).write_text(env_text(state))
    state.up_seconds = round(time.monotonic() - started, 2)
    state.save()
    return state


def _ssh_keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _write_known_hosts(state: ClusterState, hosts: Sequence[Host]) -> None:
    lines = []
    for host in hosts:
        public = (host.state_dir / "ssh" / "ssh_host_ed25519_key.pub").read_text()
        lines.append(f"{host.public_ip} {' '.join(public.split()[:2])}\n")
    Path(state.known_hosts).write_text("".join(lines))


def operator_config(state: ClusterState) -> RegistryConfig:
    """Registry settings of the cluster's operator (what the env file sets)."""
    tls = state.operator_tls
    return RegistryConfig(
        endpoints=tuple(state.endpoints),
        ca_file=tls.get("FLEETPY_CA_FILE"),
        cert_file=tls.get("FLEETPY_CERT_FILE"),
        key_file=tls.get("FLEETPY_KEY_FILE"),
    )


def _wait_registered(state: ClusterState, count: int, timeout: float = 60.0) -> None:
    registry = Registry(operator_config(state))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(registry.list_machines()) >= count:
                return
            time.sleep(0.2)
    finally:
        registry.close()
    raise ClusterError(f"the hosts did not all register in {timeout:g}s (see their console logs)")


def env_text(state: ClusterState) -> str:
    settings = {
        "FLEETPY_ENDPOINT": ",".join(state.endpoints),
        "FLEETPY_SSH_USERNAME": SSH_USER,
        "FLEETPY_SSH_IDENTITY": state.identity,
        "FLEETPY_KNOWN_HOSTS_FILE": state.known_hosts,
        **state.operator_tls,
    }
    return "".join(f"export {key}={value}\n" for key, value in settings.items())


# ----------------------------------------------------------------------------- status


@dataclass(frozen=True)
class MemberStatus:
    what: str  # "etcd", "engine", "host"
    name: str
    alive: bool
    detail: str


def status(name: str) -> tuple[ClusterState, list[MemberStatus]]:
    state = ClusterState.load(name)
    rows = []
    for number, (member, endpoint) in enumerate(
        zip(state.etcd, state.endpoints + [""] * len(state.etcd)), start=1
    ):
        rows.append(MemberStatus("etcd", f"member {number}", member.alive(), endpoint))
    for number, engine in enumerate(state.engines, start=1):
        rows.append(MemberStatus("engine", f"engine {number}", engine.alive(), f"pid {engine.pid}"))
    for host in state.hosts:
        alive = current_init(host) != 0
        meta = ",".join(f"{k}={v}" for k, v in sorted(host.metadata.items()))
        detail = f"{host.address} {host.machine_id[:8]} {meta}"
        if not alive and host.keeper is not None and host.keeper.alive():
            detail += " (rebooting)"
        rows.append(MemberStatus("host", host.name, alive, detail))
    return state, rows


def current_init(host: HostRecord) -> int:
    """The pid of the host's init now (its keeper may have booted it again since `up`
    recorded the first one); 0 if it is not running (down, or between two boots)."""
    if host.keeper is None:  # a cluster made before keepers
        return host.init.pid if host.init is not None and host.init.alive() else 0
    if not host.keeper.alive():
        return 0
    boot = current_boot(host.keeper.pid)
    return boot.init if boot is not None else 0


# ----------------------------------------------------------------------------- down


class Outcome(StrEnum):
    REMOVED = "removed"
    GONE = "already gone"
    FAILED = "could not remove"


@dataclass(frozen=True)
class Removal:
    """One thing `down` dealt with, and how."""

    what: str
    outcome: Outcome
    detail: str = ""

    @property
    def line(self) -> str:
        if self.outcome is Outcome.REMOVED:
            return f"removed {self.what}"
        if self.outcome is Outcome.GONE:
            return f"{self.what} was already gone"
        return f"{self.what}: {self.detail}"


def _wait_gone(records: Sequence[ProcessRecord | None], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(r is not None and r.alive() for r in records):
            return
        time.sleep(0.1)


def _signal(record: ProcessRecord | None) -> None:
    if record is not None and record.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)


def _host_processes(host: HostRecord) -> list[ProcessRecord | None]:
    """A host's processes: its keeper, frozen first so it boots nothing more (also when
    its guest is rebooting), the boot it runs now, and those `up` recorded."""
    now: list[ProcessRecord | None] = []
    if host.keeper is not None and host.keeper.alive():
        boot = freeze_keeper(host.keeper.pid)
        if boot is not None:
            now = [ProcessRecord.of(boot.init), ProcessRecord.of(boot.nspawn)]
    return [*now, host.init, host.nspawn, host.keeper]


def _signal_host(host: HostRecord, processes: Sequence[ProcessRecord | None]) -> None:
    """A host's init first: killing nspawn alone orphans it, and it runs on. The recorded
    one is checked to be in the host's pid namespace still; the others are live records."""
    if host.init is not None and host.init.alive():
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{host.init.pid}/ns/pid") == host.pid_ns:
                os.kill(host.init.pid, signal.SIGKILL)
    for record in processes:
        if record is not host.init:
            _signal(record)


@dataclass(frozen=True)
class _Processes:
    what: str
    records: Sequence[ProcessRecord | None]
    kill: Callable[[], None]


def _end(groups: Sequence[_Processes]) -> Iterator[Removal]:
    """SIGKILL every group's live processes, wait for all of them at once, and say of each
    group whether it was already gone, is gone now, or outlived the signal."""
    killed = []
    for group in groups:
        if not any(r is not None and r.alive() for r in group.records):
            yield Removal(group.what, Outcome.GONE)
            continue
        group.kill()
        killed.append(group)
    _wait_gone([r for group in killed for r in group.records])
    for group in killed:
        left = [r.pid for r in group.records if r is not None and r.alive()]
        if left:
            pids = ", ".join(map(str, left))
            yield Removal(group.what, Outcome.FAILED, f"pid {pids} still runs after SIGKILL")
        else:
            yield Removal(group.what, Outcome.REMOVED)


def _attempt(what: str, remove: Callable[[], bool]) -> Removal:
    """REMOVE() is True if it removed WHAT, False if it found it gone."""
    try:
        removed = remove()
    except (FleetpyError, OSError, subprocess.SubprocessError) as exc:
        return Removal(what, Outcome.FAILED, " ".join(str(exc).split()) or type(exc).__name__)
    return Removal(what, Outcome.REMOVED if removed else Outcome.GONE)


def _remove_directory(directory: Path) -> bool:
    """The cluster's directory, its state file last (kept if anything else stays). Nothing
    mounted below it is entered: its files are not the cluster's."""
    if not directory.exists():
        return False
    prefix = str(directory.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if line.split()[4].startswith(prefix)]
    if mounts:
        raise ClusterError(f"{', '.join(sorted(mounts))}: a mount point (unmount it)")
    for entry in directory.iterdir():
        if entry.name == "state.json":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    with contextlib.suppress(FileNotFoundError):
        (directory / "state.json").unlink()
    directory.rmdir()
    return True


_STRAY_PROGRAMS = {b"etcd", b"systemd-nspawn"}  # not, say, a `tail -f` of a log there


def strays(name: str, directory: str) -> list[int]:
    """Processes of this cluster that its state does not list: an `up` killed between
    starting one and recording it. Found by the cluster's directory on their command line
    (etcd's data dir, nspawn's binds) or the mark in their environment (engines)."""
    needle, mark = (directory.rstrip("/") + "/").encode(), f"{CLUSTER_MARK}={name}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ours = (os.path.basename(argv[0]) in _STRAY_PROGRAMS or is_keeper(argv)) and any(
                needle in arg for arg in argv
            )
            if ours or mark in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def _is_keeper_pid(pid: int) -> bool:
    try:
        return is_keeper(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
    except OSError:
        return False


def _kill_stray(pid: int) -> None:
    """SIGKILL a process; an nspawn's container init first (in its own pid namespace),
    since killing nspawn alone leaves the container running; a keeper is frozen first,
    so it boots nothing more."""
    with contextlib.suppress(OSError):
        if _is_keeper_pid(pid):
            boot = freeze_keeper(pid)
            for process in (boot.init, boot.nspawn) if boot else ():
                os.kill(process, signal.SIGKILL)
    with contextlib.suppress(OSError):
        own_ns = os.readlink("/proc/self/ns/pid")
        children = " ".join(
            p.read_text() for p in Path(f"/proc/{pid}/task").glob("*/children")
        ).split()
        for child in children:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{child}/ns/pid") != own_ns:
                    os.kill(int(child), signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


def down(name: str, say: Callable[[str], None] | None = None) -> list[Removal]:
    """Remove everything the cluster's state lists, saying each thing as it goes (SAY);
    what is gone already counts as removed. Raises ClusterError at the end, after trying
    everything else, if anything could not be removed; the state is then kept, so another
    `down` finishes the job. No cluster of that name: nothing to do, no error."""
    _require_root()
    say = say or (lambda line: None)
    directory = _directory(name)
    if not directory.exists():
        say(f"no local cluster named {name}: nothing to remove")
        return []
    done: list[Removal] = []

    def note(removals: Iterable[Removal]) -> None:
        for removal in removals:
            done.append(removal)
            if removal.outcome is not Outcome.FAILED:
                say(removal.line)

    if (directory / "state.json").exists():
        state = ClusterState.load(name)
        _remove_listed(state, note)
    # Keepers first: one killed after its nspawn could boot it again.
    unrecorded = sorted(strays(name, str(directory)), key=lambda pid: not _is_keeper_pid(pid))
    for pid in unrecorded:
        _kill_stray(pid)
    if unrecorded:
        _wait_gone([ProcessRecord.of(pid) for pid in unrecorded])
        left = [pid for pid in unrecorded if _start_time(pid)]
        what = f"{len(unrecorded)} processes up had not recorded"
        if left:
            pids = ", ".join(map(str, left))
            note([Removal(what, Outcome.FAILED, f"pid {pids} still runs after SIGKILL")])
        else:
            note([Removal(what, Outcome.REMOVED)])
    failed = [r for r in done if r.outcome is Outcome.FAILED]
    if not failed:
        note([_attempt(f"directory {directory}", partial(_remove_directory, directory))])
        failed = [r for r in done if r.outcome is Outcome.FAILED]
    if failed:
        kept = (
            ""
            if not (directory / "state.json").exists()
            else f" (its state is kept in {directory})"
        )
        raise ClusterError(
            f"cluster {name}: could not remove {'; '.join(r.line for r in failed)}. "
            f"The rest is removed{kept}: once fixed, fleetpy cluster down --name {name} again"
        )
    return done


def _remove_containers(host: HostRecord) -> bool:
    """Containers its units left in this machine's dockerd (shared by all hosts)."""
    return bool(remove_host_containers(host.name, host.machine_id))


def _remove_listed(state: ClusterState, note: Callable[[Iterable[Removal]], None]) -> None:
    """Everything the state lists, each attempted whatever happened to the others."""
    note(
        _end(
            [
                _Processes(f"engine {n} (pid {engine.pid})", [engine], partial(_signal, engine))
                for n, engine in enumerate(state.engines, start=1)
            ]
        )
    )
    hosts = [(h, _host_processes(h)) for h in state.hosts]
    note(
        _end(
            [
                _Processes(f"host {h.name}", processes, partial(_signal_host, h, processes))
                for h, processes in hosts
            ]
        )
    )
    for host in state.hosts:
        if host.machine_id:
            removal = _attempt(f"containers of host {host.name}", partial(_remove_containers, host))
            if removal.outcome is not Outcome.GONE:  # none is the usual case: no line
                note([removal])
        # The veth first: it takes its peer in the namespace with it, while a veth whose
        # namespace is deleted first vanishes a moment later by itself.
        if host.veth:
            note([_attempt(f"link {host.veth}", partial(remove_link, host.veth))])
        if host.netns:
            note([_attempt(f"namespace {host.netns}", partial(remove_netns, host.netns))])
    note(
        _end(
            [
                _Processes(
                    f"etcd member {n} (pid {member.pid})", [member], partial(_signal, member)
                )
                for n, member in enumerate(state.etcd, start=1)
            ]
        )
    )
    if state.bridge:
        note([_attempt(f"bridge {state.bridge}", partial(remove_link, state.bridge))])
