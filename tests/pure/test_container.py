"""test_container.py's tests that need no etcd and no process (README "Tests"); what the module
covers as a whole: tests/integration/test_container.py."""

from __future__ import annotations

import pytest

from fleetpy.errors import ContainerError
from fleetpy.unitfile.container import expand_unit, source_of, split_words
from fleetpy.unitfile.unit import parse_unit


def expand(text: str, name: str = "box.service") -> str:
    return expand_unit(parse_unit(text), name).serialize()


def test_source_round_trip_and_user_keys_kept() -> None:
    source = parse_unit(
        "[Unit]\nAfter=network.target\n\n[Container]\nImage=local/busybox\nHealthCmd=true\n\n"
        "[Service]\nExecStartPre=/bin/true\nExecStartPost=/bin/echo up\nRestart=always\n"
    )
    expanded = expand_unit(source, "box.service")
    # fleetpy's lines go first: the stale container is gone before the unit's own
    # steps, and the unit's post steps run once the container is healthy.
    assert expanded.values("Service", "ExecStartPre")[1:] == ["/bin/true"]
    assert expanded.values("Service", "ExecStartPost")[1:] == ["/bin/echo up"]
    assert expanded.values("Unit", "After") == ["docker.service", "network.target"]
    assert source_of(expanded, "box.service") == source
    # An expansion submitted again is the same unit (same hash).
    assert expand_unit(expanded, "box.service") == expanded
    plain = parse_unit("[Service]\nExecStart=/bin/true\n")
    assert expand_unit(plain, "x.service") is plain and source_of(plain, "x.service") is plain


INJECTION = ["a b", '"', "'", "$HOME", "${HOME}", "$$", "%n", "%%", ";", "a;b", "\\", "\\n"]


BAD = [
    ("Imgae=x", "unknown [Container] key Imgae= in box.service; did you mean Image=?"),
    ("Zzz=x", "unknown [Container] key Zzz= in box.service (known: Image, Exec,"),
    ("Image=Local/Busybox", "invalid [Container] Image=Local/Busybox"),
    ("PublishPort=80:", "invalid [Container] PublishPort=80:"),
    ("PublishPort=70000:80", "port 70000 is not in 1-65535"),
    ("PublishPort=a:80", "expected [[IP:][HOST-PORT]:]CONTAINER-PORT"),
    ("Volume=data/x:/data", "relative host path 'data/x'"),
    ("Volume=./data:/data", "relative host path './data'"),
    ("Volume=/data:rel", "the container path 'rel' must be absolute"),
    ("Volume=/a:/b:rx", "unknown volume option 'rx'"),
    ("Volume=rel", "the container path must be absolute"),
    ("Memory=lots", "expected a size such as 512m"),
    ("Memory=1m", "docker's minimum is 6m"),
    ("CPUs=0", "expected a number of CPUs above 0"),
    ("Environment=1A=x", "invalid environment variable name '1A'"),
    ("Environment=A", "'A' is not NAME=VALUE"),
    ('Environment="A=x', 'unterminated " quote'),
    ("Environment=A=\\q", "unknown escape \\q"),
    ("EnvironmentFile=rel.env", "the path must be absolute"),
    ("Label==x", "empty label key"),
    ("WorkingDir=data", "the path must be absolute"),
    ("User=a b", "expected USER[:GROUP]"),
    ("Network=a b", "expected a network name"),
    ("Pull=sometimes", "expected never, missing or always"),
    ("StopTimeout=-1", "expected seconds, 0 to 3600"),
    ("HealthInterval=2s", "needs HealthCmd="),
    ("HealthCmd=x\nHealthInterval=soon", "expected a duration"),
    ("HealthOnFailure=none", "needs HealthCmd="),
    ("HealthCmd=x\nHealthOnFailure=kill", "expected restart or none"),
    ("ReadOnly=maybe", "expected true or false"),
    ("DockerArgs=foo", "docker run options start with '-'"),
    ("ContainerName=a b", "expected [a-zA-Z0-9][a-zA-Z0-9_.-]* with the specifiers"),
    ("ContainerName=x-%n", "expected [a-zA-Z0-9][a-zA-Z0-9_.-]* with the specifiers"),
    ("Image=x:1\nImage=x:2", "[Container] Image= is given 2 times"),
]


@pytest.mark.parametrize(("line", "message"), BAD)
def test_bad_keys_and_values(line: str, message: str) -> None:
    image = "" if line.startswith("Image=") else "Image=local/busybox\n"
    with pytest.raises(ContainerError) as info:
        expand(f"[Container]\n{image}{line}\n")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "name", "message"),
    [
        ("[Container]\nExec=x\n", "box.service", "needs Image="),
        (
            "[Container]\nImage=x\n[Service]\nExecStart=/bin/true\n",
            "box.service",
            "[Service] ExecStart= in box.service: a unit with [Container] gets its ExecStart=",
        ),
        ("[Container]\nImage=x\n[Service]\nType=simple\n", "box.service", "Type="),
        ("[Container]\nImage=x\n", "box.socket", "only .service units"),
        ("[Container]\nImage=x\n", "a:b.service", "cannot be part of a container name"),
        ("[Container]\nImage=x\n", "web@a:b.service", "the instance 'a:b'"),
        ("[Container]\nImage=x\n[X-Container]\nImage=x\n", "box.service", "both"),
    ],
)
def test_bad_units(text: str, name: str, message: str) -> None:
    with pytest.raises(ContainerError) as info:
        expand(text, name)
    assert message in str(info.value)


def test_edited_expansion_is_refused() -> None:
    expanded = expand("[Container]\nImage=local/busybox\n")
    with pytest.raises(ContainerError, match="not an edited expansion"):
        expand(expanded.replace("Image=local/busybox", "Image=local/other"))
    with pytest.raises(ContainerError, match="not an edited expansion"):
        expand(expanded.replace("Restart", "X").replace("KillMode=mixed", "KillMode=none"))


def test_misspelled_section_is_refused() -> None:
    from fleetpy.unitfile.unit import fleet_options

    with pytest.raises(Exception, match=r"did you mean \[Container\]"):
        fleet_options(parse_unit("[Containr]\nImage=x\n"), "box.service")


@pytest.mark.parametrize("value", [*INJECTION, "two words", "line\nbreak", "tab\t", "\x01"])
def test_container_value_filter_round_trips(value: str) -> None:
    from fleetpy.unitfile.template import container_value

    assert split_words(container_value(value), "test") == [value]
