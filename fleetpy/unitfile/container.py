"""Container units: a [Container] section in a .service unit, expanded into the docker
commands systemd runs (Podman Quadlet's idea and key names, for docker).

  expand_unit(unit, name) -> UnitFile       what is stored, hashed, signed and run
  source_of(unit, name) -> UnitFile         the [Container] source of an expanded unit
  is_container_unit(unit) -> bool           an expanded unit (it has [X-Container])
  check_instance(unit, name) -> None        an instance name usable in its container name
  parse_spec(entries, name) -> ContainerSpec
  CONTAINER_KEYS                            the known [Container] keys

WHERE expansion happens: at submit (and for every unit a deployment renders), in the
client. The stored unit is the expansion, so its content hash and signature cover exactly
what systemd runs and an agent runs it like any unit. The source's [Container] section is
kept in it as [X-Container] (systemd ignores X- sections), and the expansion adds only
lines computed from that section and the unit name, so `source_of` takes them away again
(`cat` shows the source, `cat --expanded` the stored unit). An expanded unit submitted
again is accepted only if it is exactly the expansion of its own [X-Container] section.

QUOTING: every value reaches docker as one argument written by fleetpy.unitfile.quoting.exec_arg:
`$` becomes `$$`, `%` becomes `%%`, quotes, backslashes and control characters are
escaped and `;` is quoted, so no value becomes a systemd specifier, an environment
variable, a second command or shell text (nothing runs through a shell but fleetpy's own
health-wait script, which takes the container name as "$1"). The only specifiers in an
expansion are fleetpy's own (%p %i %m in the container name). Keys holding several words
(Exec=, DockerArgs=, Environment=, Label=) are split as systemd splits a command line:
double or single quotes group, and backslash escapes are C escapes (\\n, \\t, \\xHH, \\\\,
\\", \\', \\s for a space).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from fleetpy.errors import ContainerError

from . import quoting
from .quoting import exec_arg
from .unit import (
    CONTAINER_SECTION,
    EXPANDED_CONTAINER_SECTION,
    Assignment,
    Entry,
    Section,
    UnitFile,
    did_you_mean,
    parse_name,
    value_meaning,
)

DOCKER = "/usr/bin/docker"
DEFAULT_STOP_TIMEOUT = 10
MAX_STOP_TIMEOUT = 3600
# systemd waits this much beyond StopTimeout= for `docker stop` and the client to end.
STOP_MARGIN = 15
MIN_MEMORY = 6 * 1024 * 1024  # docker refuses less
# docker run exits 128+15 when the container ends on docker stop's SIGTERM (via --init).
SIGTERM_EXIT = "143"


class Pull(StrEnum):
    NEVER = "never"
    MISSING = "missing"
    ALWAYS = "always"


class HealthOnFailure(StrEnum):
    """What the agent does when a running container turns unhealthy (Quadlet's key; its
    kill and stop are not offered)."""

    RESTART = "restart"  # the unit restarted in place, by systemd (fleetpy's default)
    NONE = "none"  # only reported


# Every known key; True: may be given several times (values accumulate, in order).
CONTAINER_KEYS: dict[str, bool] = {
    "Image": False,
    "Exec": False,
    "ContainerName": False,
    "PublishPort": True,
    "Environment": True,
    "EnvironmentFile": True,
    "Volume": True,
    "Network": True,
    "Label": True,
    "User": False,
    "WorkingDir": False,
    "Entrypoint": False,
    "DockerArgs": True,
    "Pull": False,
    "StopTimeout": False,
    "HealthCmd": False,
    "HealthInterval": False,
    "HealthOnFailure": False,
    "ReadOnly": False,
    "Memory": False,
    "CPUs": False,
}

# [Service] keys fleetpy sets for a container; the source must leave them alone.
OWNED_SERVICE_KEYS: tuple[str, ...] = (
    "Type",
    "ExecStart",
    "ExecStop",
    "KillMode",
    "SuccessExitStatus",
    "TimeoutStopSec",
)


@dataclass(frozen=True)
class ContainerSpec:
    """A [Container] section, validated; values as docker must receive them."""

    image: str
    container_name: str  # may hold fleetpy's specifiers %p %i %m (already unit syntax)
    exec_args: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    environment: tuple[str, ...] = ()  # KEY=value
    environment_files: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # key=value
    user: str | None = None
    working_dir: str | None = None
    entrypoint: str | None = None
    docker_args: tuple[str, ...] = ()
    pull: Pull = Pull.MISSING
    stop_timeout: int = DEFAULT_STOP_TIMEOUT
    health_cmd: str | None = None
    health_interval: str | None = None
    # Read by the agent from [X-Container]; no docker option (expansion unchanged).
    health_on_failure: HealthOnFailure = HealthOnFailure.RESTART
    read_only: bool = False
    memory: str | None = None
    cpus: str | None = None

    def run_args(self) -> list[str]:
        """`docker run`'s arguments after `run`, unquoted (the container name aside).
        Options are written --opt=value: a value starting with '-' stays a value."""
        args = ["--rm", "--init", f"--pull={self.pull}"]
        args += [f"--publish={p}" for p in self.publish]
        args += [f"--env={e}" for e in self.environment]
        args += [f"--env-file={f}" for f in self.environment_files]
        args += [f"--volume={v}" for v in self.volumes]
        args += [f"--network={n}" for n in self.networks]
        args += [f"--label={label}" for label in self.labels]
        for option, value in (
            ("user", self.user),
            ("workdir", self.working_dir),
            ("entrypoint", self.entrypoint),
            ("health-cmd", self.health_cmd),
            ("health-interval", self.health_interval),
            ("memory", self.memory),
            ("cpus", self.cpus),
        ):
            if value is not None:
                args.append(f"--{option}={value}")
        if self.read_only:
            args.append("--read-only")
        args += self.docker_args
        return args


# ----------------------------------------------------------------------------- words


def split_words(value: str, where: str) -> list[str]:
    """Split like a systemd command line: quotes group, C escapes are decoded."""
    try:
        return quoting.split_words(value, escapes=True)
    except quoting.WordsError as exc:
        raise ContainerError(f"{where}: {exc}") from None


# ----------------------------------------------------------------------------- values

_DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# [registry[:port]/]path[:tag][@digest]; docker wants the path in lower case.
_IMAGE = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
_PORT = r"[0-9]{1,5}(?:-[0-9]{1,5})?"
_PUBLISH = re.compile(
    rf"(?:(?P<ip>[0-9]{{1,3}}(?:\.[0-9]{{1,3}}){{3}}|\[[0-9a-fA-F:.]+\]):)?(?:(?P<host>{_PORT})?:)?"
    rf"(?P<container>{_PORT})(?:/(?P<proto>tcp|udp|sctp))?"
)
_VOLUME_OPTIONS = frozenset(
    "ro rw z Z shared slave private rshared rslave rprivate nocopy consistent cached delegated".split()
)
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]*)?")
_NETWORK = re.compile(r"(?:container:)?[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ns|us|ms|s|m|h))+")
_MEMORY = re.compile(r"([0-9]{1,15})([bkmg]?)", re.IGNORECASE)
_CPUS = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,3})?")
_BOOLEANS = {"true": True, "yes": True, "1": True, "on": True}
_BOOLEANS |= {"false": False, "no": False, "0": False, "off": False}
# Specifiers fleetpy lets ContainerName= use: the unit's prefix, instance, machine id.
_NAME_SPECIFIERS = ("%p", "%i", "%m")


class _Reader:
    """Checks one [Container] section; each error names the unit, the key and the value."""

    def __init__(self, entries: Sequence[Entry], name: str) -> None:
        self.name = name
        self.values: dict[str, tuple[str, ...]] = {}
        for key, values in entries:
            if key not in CONTAINER_KEYS:
                raise ContainerError(
                    f"unknown [Container] key {key}= in {name}{did_you_mean(key, list(CONTAINER_KEYS))}"
                )
            if not CONTAINER_KEYS[key] and len(values) > 1:
                raise ContainerError(
                    f"[Container] {key}= is given {len(values)} times in {name}; it takes one value"
                )
            self.values[key] = values

    def bad(self, key: str, value: str, why: str) -> ContainerError:
        shown = value if len(value) <= 80 else value[:80] + "..."
        return ContainerError(f"invalid [Container] {key}={shown} in {self.name}: {why}")

    def one(self, key: str) -> str | None:
        values = self.values.get(key)
        return values[0] if values else None

    def each(self, key: str, check: Callable[[str], str | None]) -> tuple[str, ...]:
        for value in self.values.get(key, ()):
            problem = check(value)
            if problem:
                raise self.bad(key, value, problem)
        return self.values.get(key, ())

    def words(self, key: str) -> list[str]:
        return [
            word
            for value in self.values.get(key, ())
            for word in split_words(value, f"[Container] {key}= in {self.name}")
        ]


def _absolute(path: str) -> str | None:
    return None if path.startswith("/") else "the path must be absolute (start with /)"


def _publish_problem(value: str) -> str | None:
    match = _PUBLISH.fullmatch(value)
    if not match:
        return "expected [[IP:][HOST-PORT]:]CONTAINER-PORT[/tcp|udp|sctp], e.g. 8080:80"
    for group in ("host", "container"):
        for port in (match.group(group) or "").split("-"):
            if port and not 1 <= int(port) <= 65535:
                return f"port {port} is not in 1-65535"
    return None


def _volume_problem(value: str) -> str | None:
    parts = value.split(":")
    if len(parts) > 3:
        return "expected [SOURCE:]CONTAINER-PATH[:OPTIONS] (paths cannot hold ':')"
    if len(parts) == 1:
        return _absolute(parts[0]) and "the container path must be absolute (start with /)"
    source, target = parts[0], parts[1]
    if not source.startswith("/") and not _DOCKER_NAME.fullmatch(source):
        return (
            f"relative host path {source!r}: a host path must be absolute (start with /), "
            "a volume name is [a-zA-Z0-9][a-zA-Z0-9_.-]*"
        )
    if not target.startswith("/"):
        return f"the container path {target!r} must be absolute (start with /)"
    if len(parts) == 3:
        unknown = [o for o in parts[2].split(",") if o not in _VOLUME_OPTIONS]
        if unknown:
            return (
                f"unknown volume option {unknown[0]!r} (known: {' '.join(sorted(_VOLUME_OPTIONS))})"
            )
    return None


def _memory_problem(value: str) -> str | None:
    match = _MEMORY.fullmatch(value)
    if not match:
        return "expected a size such as 512m or 2g (units b, k, m, g)"
    scale = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
    if int(match.group(1)) * scale < MIN_MEMORY:
        return "docker's minimum is 6m"
    return None


def _assignment_problem(word: str, what: str) -> str | None:
    key, eq, _ = word.partition("=")
    if not eq:
        return f"{word!r} is not {what}=VALUE"
    if what == "NAME" and not _ENV_NAME.fullmatch(key):
        return f"invalid environment variable name {key!r}"
    if what == "KEY" and not key:
        return f"{word!r} has an empty label key"
    return None


def _container_name(reader: _Reader, unit: str) -> str:
    """The container name, unit syntax: unique per host through %m (hosts may share one
    dockerd), per instance through %i."""
    parsed = parse_name(unit)
    explicit = reader.one("ContainerName")
    if explicit is not None:
        stripped = explicit
        for specifier in _NAME_SPECIFIERS:
            stripped = stripped.replace(specifier, "x")
        if "%" in stripped or not _DOCKER_NAME.fullmatch(stripped):
            raise reader.bad(
                "ContainerName",
                explicit,
                "expected [a-zA-Z0-9][a-zA-Z0-9_.-]* with the specifiers %p %i %m "
                "(without %m, hosts sharing one dockerd clash)",
            )
        name = explicit
    else:
        name = "fleetpy-%p-%i-%m" if parsed.instance is not None else "fleetpy-%p-%m"
    if "%p" in name and not _DOCKER_NAME.fullmatch(parsed.prefix):
        raise ContainerError(
            f"the unit name {unit} cannot be part of a container name (allowed: "
            "[a-zA-Z0-9_.-]); set [Container] ContainerName="
        )
    return name


def parse_spec(entries: Sequence[Entry], name: str) -> ContainerSpec:
    """Validate a [Container] section of unit `name`; errors name the key and value."""
    r = _Reader(entries, name)
    image = r.one("Image")
    if image is None:
        raise ContainerError(f"[Container] in {name} needs Image=")
    if not _IMAGE.fullmatch(image):
        raise r.bad("Image", image, "expected a docker image reference such as local/app:1.2")
    publish = r.each("PublishPort", _publish_problem)
    environment = tuple(r.words("Environment"))
    for word in environment:
        problem = _assignment_problem(word, "NAME")
        if problem:
            raise r.bad("Environment", word, problem)
    labels = tuple(r.words("Label"))
    for word in labels:
        problem = _assignment_problem(word, "KEY")
        if problem:
            raise r.bad("Label", word, problem)
    env_files = r.each("EnvironmentFile", _absolute)
    volumes = r.each("Volume", _volume_problem)
    networks = r.each(
        "Network",
        lambda v: None if _NETWORK.fullmatch(v) else "expected a network name or container:NAME",
    )
    user = r.one("User")
    if user is not None and not _USER.fullmatch(user):
        raise r.bad("User", user, "expected USER[:GROUP] (names or numbers)")
    working_dir = r.one("WorkingDir")
    if working_dir is not None and _absolute(working_dir):
        raise r.bad("WorkingDir", working_dir, "the path must be absolute (start with /)")
    docker_args = tuple(r.words("DockerArgs"))
    if docker_args and not docker_args[0].startswith("-"):
        raise r.bad("DockerArgs", docker_args[0], "docker run options start with '-'")
    pull_text = r.one("Pull") or Pull.MISSING.value
    if pull_text not in {p.value for p in Pull}:
        raise r.bad("Pull", pull_text, "expected never, missing or always")
    stop_text = r.one("StopTimeout")
    stop_timeout = DEFAULT_STOP_TIMEOUT
    if stop_text is not None:
        if not re.fullmatch(r"[0-9]{1,5}", stop_text) or int(stop_text) > MAX_STOP_TIMEOUT:
            raise r.bad("StopTimeout", stop_text, f"expected seconds, 0 to {MAX_STOP_TIMEOUT}")
        stop_timeout = int(stop_text)
    health_cmd = r.one("HealthCmd")
    health_interval = r.one("HealthInterval")
    if health_interval is not None:
        if health_cmd is None:
            raise r.bad("HealthInterval", health_interval, "needs HealthCmd=")
        if not _DURATION.fullmatch(health_interval):
            raise r.bad(
                "HealthInterval", health_interval, "expected a duration such as 2s or 1m30s"
            )
    on_failure = r.one("HealthOnFailure")
    if on_failure is not None:
        if health_cmd is None:
            raise r.bad("HealthOnFailure", on_failure, "needs HealthCmd=")
        if on_failure not in {h.value for h in HealthOnFailure}:
            raise r.bad("HealthOnFailure", on_failure, "expected restart or none")
    read_only_text = r.one("ReadOnly")
    if read_only_text is not None and read_only_text.lower() not in _BOOLEANS:
        raise r.bad("ReadOnly", read_only_text, "expected true or false")
    memory = r.one("Memory")
    if memory is not None:
        problem = _memory_problem(memory)
        if problem:
            raise r.bad("Memory", memory, problem)
    cpus = r.one("CPUs")
    if cpus is not None and (not _CPUS.fullmatch(cpus) or float(cpus) <= 0):
        raise r.bad("CPUs", cpus, "expected a number of CPUs above 0, such as 0.5 or 2")
    return ContainerSpec(
        image=image,
        container_name=_container_name(r, name),
        exec_args=tuple(r.words("Exec")),
        publish=publish,
        environment=environment,
        environment_files=env_files,
        volumes=volumes,
        networks=networks,
        labels=labels,
        user=user,
        working_dir=working_dir,
        entrypoint=r.one("Entrypoint"),
        docker_args=docker_args,
        pull=Pull(pull_text),
        stop_timeout=stop_timeout,
        health_cmd=health_cmd,
        health_interval=health_interval,
        health_on_failure=HealthOnFailure(on_failure or HealthOnFailure.RESTART),
        read_only=read_only_text is not None and _BOOLEANS[read_only_text.lower()],
        memory=memory,
        cpus=cpus,
    )


# ----------------------------------------------------------------------------- expansion

# Waits until docker reports the container healthy, so the unit becomes active only
# then. Its only argument is the container name ("$1"); $MAINPID (set by systemd for
# ExecStartPost=) tells a container that died from one still starting. Bounded by
# TimeoutStartSec=.
HEALTH_WAIT = (
    "while :; do "
    f"s=$({DOCKER} inspect --format '{{{{if .State.Health}}}}{{{{.State.Health.Status}}}}{{{{end}}}}'"
    ' "$1" 2>/dev/null); '
    'case "$s" in healthy) exit 0;; '
    'unhealthy) echo "container $1 is unhealthy" >&2; exit 1;; esac; '
    'kill -0 "$MAINPID" 2>/dev/null || '
    '{ echo "container $1 ended before it was healthy" >&2; exit 1; }; '
    "sleep 1; done"
)


def _command(args: Sequence[str], name: str) -> str:
    """An Exec line: fleetpy's own words and the container name keep their syntax (the
    name's specifiers), every other argument is quoted."""
    return " ".join(exec_arg(a, specifiers=a == name) for a in args)


def _generated(spec: ContainerSpec) -> list[tuple[str, str, tuple[str, ...]]]:
    """(section, key, values) the expansion adds, in order. ExecStartPre=, ExecStartPost=,
    Wants= and After= go before the source's own values of those keys."""
    name = spec.container_name
    run = [DOCKER, "run", "--name", name, *spec.run_args(), spec.image, *spec.exec_args]
    service: list[tuple[str, str, tuple[str, ...]]] = [
        # exec: active once docker run is running; with HealthCmd= the post step below
        # keeps the unit activating until the container is healthy.
        ("Service", "Type", ("exec",)),
        # docker stop (ExecStop=) ends the container; then SIGTERM reaches only the
        # client, and anything left is killed at the end.
        ("Service", "KillMode", ("mixed",)),
        # A container left over by a client that was killed would block the name.
        ("Service", "ExecStartPre", ("-" + _command([DOCKER, "rm", "-f", name], name),)),
        ("Service", "ExecStart", (_command(run, name),)),
    ]
    if spec.health_cmd is not None:
        wait = ["/bin/sh", "-c", HEALTH_WAIT, "fleetpy-health-wait", name]
        service.append(("Service", "ExecStartPost", (_command(wait, name),)))
    stop = [DOCKER, "stop", "-t", str(spec.stop_timeout), name]
    service += [
        ("Service", "ExecStop", (_command(stop, name),)),
        ("Service", "SuccessExitStatus", (SIGTERM_EXIT,)),
        ("Service", "TimeoutStopSec", (str(spec.stop_timeout + STOP_MARGIN),)),
    ]
    # Wants, not Requires: hosts that share another machine's dockerd have no docker.service.
    unit = [("Unit", "Wants", ("docker.service",)), ("Unit", "After", ("docker.service",))]
    return unit + service


def _drop_empty(contents: Sequence[Section]) -> list[Section]:
    # An empty section means nothing to systemd; dropping it keeps expansion reversible.
    return [(name, assignments) for name, assignments in contents if assignments]


def _first_place(assignments: Sequence[Assignment], key: str) -> int | None:
    """Where values put first under `key` go: after its last empty assignment (which
    resets the key), else before its first assignment; None if the key is absent."""
    place = None
    for i, (other, value) in enumerate(assignments):
        if other == key:
            if not value_meaning(value):
                place = i + 1
            elif place is None:
                place = i
    return place


def _add(contents: list[Section], section: str, key: str, values: tuple[str, ...]) -> None:
    """Put `values` first under section/key; a missing section goes after [Unit]."""
    added = tuple((key, value) for value in values)
    for i, (name, assignments) in enumerate(contents):
        if name != section:
            continue
        at = _first_place(assignments, key)
        if at is None:
            at = len(assignments)
        contents[i] = (name, (*assignments[:at], *added, *assignments[at:]))
        return
    at = 1 if contents and contents[0][0] == "Unit" and section != "Unit" else 0
    contents.insert(at, (section, added))


def is_container_unit(unit: UnitFile) -> bool:
    """An expanded container unit (what is stored)."""
    return EXPANDED_CONTAINER_SECTION in unit.sections()


def _expand(unit: UnitFile, name: str) -> UnitFile:
    parsed = parse_name(name)
    if parsed.suffix != "service":
        raise ContainerError(f"[Container] in {name}: only .service units can run a container")
    for key in OWNED_SERVICE_KEYS:
        if unit.values("Service", key):
            raise ContainerError(
                f"[Service] {key}= in {name}: a unit with [Container] gets its {key}= from "
                "fleetpy (remove it"
                + (", or the [Container] section)" if key == "ExecStart" else ")")
            )
    spec = parse_spec(unit.options(CONTAINER_SECTION), name)
    if parsed.is_instance and "%i" in spec.container_name:
        _check_instance_name(parsed.instance or "", name)
    contents = [
        (EXPANDED_CONTAINER_SECTION if section == CONTAINER_SECTION else section, entries)
        for section, entries in _drop_empty(unit.contents)
    ]
    for section, key, values in _generated(spec):
        _add(contents, section, key, values)
    return UnitFile(tuple(contents))


def _check_instance_name(instance: str, name: str) -> None:
    if not _DOCKER_NAME.fullmatch(instance):
        raise ContainerError(
            f"the instance {instance!r} of {name} cannot be part of its container name "
            "(allowed: [a-zA-Z0-9_.-])"
        )


def source_of(unit: UnitFile, name: str) -> UnitFile:
    """The [Container] source an expanded unit came from (itself if not a container unit)."""
    if not is_container_unit(unit):
        return unit
    spec = parse_spec(unit.options(EXPANDED_CONTAINER_SECTION), name)
    mismatch = ContainerError(
        f"[{EXPANDED_CONTAINER_SECTION}] in {name} does not match the rest of the unit: "
        f"submit the [{CONTAINER_SECTION}] source, not an edited expansion"
    )
    sections = dict(unit.contents)
    for section, key, values in _generated(spec):
        assignments = sections.get(section, ())
        at = _first_place(assignments, key)
        added = tuple((key, value) for value in values)
        if at is None or assignments[at : at + len(added)] != added:
            raise mismatch
        sections[section] = (*assignments[:at], *assignments[at + len(added) :])
    contents = [
        (CONTAINER_SECTION if section == EXPANDED_CONTAINER_SECTION else section, assignments)
        for section, assignments in sections.items()
    ]
    return UnitFile(tuple(_drop_empty(contents)))


def expand_unit(unit: UnitFile, name: str) -> UnitFile:
    """The unit systemd gets: a [Container] section expanded (see the module docstring);
    any other unit unchanged."""
    sections = unit.sections()
    if CONTAINER_SECTION in sections and EXPANDED_CONTAINER_SECTION in sections:
        raise ContainerError(
            f"{name} has both [{CONTAINER_SECTION}] and [{EXPANDED_CONTAINER_SECTION}]; "
            f"write only [{CONTAINER_SECTION}]"
        )
    if CONTAINER_SECTION in sections:
        return _expand(unit, name)
    if EXPANDED_CONTAINER_SECTION in sections:
        # An expansion submitted again (`cat --expanded` output): accepted as is only
        # when it is exactly what its own [X-Container] section expands to.
        source = source_of(unit, name)
        if _expand(source, name) != unit:
            raise ContainerError(
                f"[{EXPANDED_CONTAINER_SECTION}] in {name} does not match the rest of the "
                f"unit: submit the [{CONTAINER_SECTION}] source, not an edited expansion"
            )
    return unit


def check_instance(unit: UnitFile, name: str) -> None:
    """Starting instance `name` of a stored template: its instance must fit in the
    container name (the template was expanded before any instance was known)."""
    parsed = parse_name(name)
    if not is_container_unit(unit) or not parsed.is_instance:
        return
    spec = parse_spec(unit.options(EXPANDED_CONTAINER_SECTION), name)
    if "%i" in spec.container_name:
        _check_instance_name(parsed.instance or "", name)
