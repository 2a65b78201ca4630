"""fleetctl's status, journal and ssh: a unit's machine reached with the system's `ssh`
client (no protocol of our own), through a jump host with --tunnel."""

from __future__ import annotations

import ipaddress
import os
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .config import SshSettings
from .errors import FleetpyError, UnknownUnitError
from .model.records import ClusterView
from .registry.roles import ClusterReader
from .unitfile.unit import parse_name


class RemoteError(FleetpyError):
    """A machine could not be found or reached over ssh."""


@dataclass(frozen=True)
class Target:
    machine: str
    address: str

    @property
    def label(self) -> str:
        return f"{self.machine[:8]}/{self.address}"


def _common_options(settings: SshSettings, tty: bool) -> list[str]:
    options = [
        "-o", "BatchMode=yes" if not tty else "BatchMode=no",
        "-o", f"StrictHostKeyChecking={'yes' if settings.strict_host_key_checking else 'no'}",
        "-o", f"UserKnownHostsFile={os.path.expanduser(settings.known_hosts_file)}",
        "-o", "ConnectTimeout=10",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip
    if settings.identity:
        options += ["-i", os.path.expanduser(settings.identity), "-o", "IdentitiesOnly=yes"]
    return options


def _host_and_port(text: str) -> tuple[str, str]:
    """HOST, HOST:PORT, [V6] or [V6]:PORT (a bare IPv6 address has no port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest.removeprefix(":") or "22"
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port or "22"
    return text, "22"


def _proxy_command(settings: SshSettings) -> str:
    """ssh's ProxyCommand for --tunnel. Not -J: options given on the command line
    apply to the destination only, so the jump would ignore the identity and the
    known-hosts file."""
    assert settings.tunnel is not None
    user, at, host_port = settings.tunnel.rpartition("@")
    jump, port = _host_and_port(host_port)
    argv = ["ssh", *_common_options(settings, tty=False), "-p", port]
    jump = f"{user if at else settings.username}@{jump}"
    # ssh expands %-tokens in ProxyCommand: a literal % in a path is %%.
    quoted = shlex.join([*argv, jump]).replace("%", "%%")
    return f"{quoted} -W %h:%p"


def ssh_argv(
    settings: SshSettings, address: str, command: Sequence[str], tty: bool = False
) -> list[str]:
    """The ssh command line for `command` on `address` (empty: a login shell)."""
    argv = ["ssh", *_common_options(settings, tty), "-p", str(settings.port)]
    if settings.tunnel:
        argv += ["-o", f"ProxyCommand={_proxy_command(settings)}"]
    argv.append("-t" if tty else "-T")
    argv += [f"{settings.username}@{address}", "--", *command]
    return argv


def _target(view: ClusterView, machine: str) -> Target:
    record = view.machines.get(machine)
    if record is None or not record.ip:
        raise RemoteError(f"machine {machine[:8]} is not alive (or has no address)")
    # The address comes from etcd and goes to ssh, which hands a --tunnel's ProxyCommand
    # (with the address in it) to a shell: an IP address only, whatever the registry let by.
    try:
        ipaddress.ip_address(record.ip)
    except ValueError:
        raise RemoteError(
            f"machine {machine[:8]} has the address {record.ip[:64]!r} in etcd, not an IP address"
        ) from None
    return Target(machine, record.ip)


def unit_targets(registry: ClusterReader, name: str) -> list[Target]:
    """The machines a unit runs on: where it reports a state (every machine of a global
    unit), else where it is placed."""
    unit = parse_name(name).name
    view = registry.read_view(with_text=False)
    # A newer fleetpy's record is unreadable here, but where the unit runs is not.
    if unit not in view.units and unit not in view.newer_units:
        raise UnknownUnitError.not_submitted(unit)
    machines = sorted(view.states.get(unit, {}))
    if not machines and unit in view.schedule:
        machines = [view.schedule[unit][0]]
    if not machines:
        raise RemoteError(f"unit {unit} runs on no machine")
    return [_target(view, m) for m in machines]


def machine_target(registry: ClusterReader, what: str) -> Target:
    """A machine by id or unique id prefix, or the (one) machine of a unit."""
    view = registry.read_view(with_text=False)
    if "." in what:  # a unit name
        targets = unit_targets(registry, what)
        if len(targets) > 1:
            shown = ", ".join(t.label for t in targets)
            raise RemoteError(f"{what} runs on {len(targets)} machines ({shown}): name one")
        return targets[0]
    matches = sorted(m for m in view.machines if m.startswith(what))
    if len(matches) != 1:
        why = "no machine" if not matches else f"{len(matches)} machines"
        raise RemoteError(f"{why} with an id starting {what!r}")
    return _target(view, matches[0])


def run(settings: SshSettings, target: Target, command: Sequence[str]) -> Iterator[str]:
    """Lines of `command`'s output on the target; RemoteError (one line) when the
    machine cannot be reached. Non-zero exits of the command itself are not errors
    (`systemctl status` of a stopped unit exits 3)."""
    argv = ssh_argv(settings, target.address, command)
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except FileNotFoundError:
        raise RemoteError("ssh not found: apt-get install openssh-client") from None
    assert process.stdout is not None and process.stderr is not None
    for raw in process.stdout:
        yield raw.decode("utf-8", "replace").rstrip("\n")
    errors = process.stderr.read().decode("utf-8", "replace")
    if process.wait() == 255:  # ssh's own failure: the machine, not the command
        detail = " ".join(errors.split()) or "ssh failed"
        raise RemoteError(f"cannot reach machine {target.label} over ssh: {detail}")


def exec_ssh(settings: SshSettings, target: Target, command: Sequence[str]) -> None:
    """Replace this process with an interactive ssh to the target (fleetctl ssh)."""
    argv = ssh_argv(settings, target.address, command, tty=not command)
    try:
        os.execvp("ssh", argv)
    except FileNotFoundError:
        raise RemoteError("ssh not found: apt-get install openssh-client") from None


def status_command(unit: str) -> list[str]:
    return ["systemctl", "status", "--no-pager", "--full", "--lines", "10", unit]


def journal_command(unit: str, lines: int, follow: bool) -> list[str]:
    command = ["journalctl", "--no-pager", "--unit", unit, "--lines", str(lines)]
    return [*command, "--follow"] if follow else command


__all__ = [
    "RemoteError",
    "Target",
    "exec_ssh",
    "journal_command",
    "machine_target",
    "run",
    "ssh_argv",
    "status_command",
    "unit_targets",
]
