"""Container units: [Container] parsed, validated and expanded (fleetpy/unitfile/container.py);
every expansion checked by the real `systemd-analyze verify`; bad input is one line from
the CLI with nothing written; `cat` shows the source, `cat --expanded` what systemd gets.
What docker receives is checked on a real host in tests/system/test_container_hosts.py.

Here: the tests that need the session's etcd or a short-lived helper process (README "Tests"); the others are in
tests/pure/test_container.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fleetpy.registry import Registry
from fleetpy.unitfile.container import CONTAINER_KEYS, expand_unit, source_of, split_words
from fleetpy.unitfile.unit import parse_unit

from support.cli_helpers import one_error_line, snapshot, write
from support.cli_run import Run
from support.paths import ROOT

EVERY_KEY = """\
[Unit]
Description=every key

[Container]
Image=local/busybox:latest
Exec=sh -c 'sleep 1000' "a b"
ContainerName=box-%p-%m
PublishPort=127.0.0.1:8080:80/tcp
PublishPort=9000-9001:9000-9001
Environment=A=1 "B=two words" C=50%
EnvironmentFile=/etc/box.env
Volume=/srv/data:/data:ro
Volume=named:/cache
Network=host
Label=team=web
User=1000:1000
WorkingDir=/data
Entrypoint=/bin/sh
DockerArgs=--cap-add NET_ADMIN "--add-host=x:127.0.0.1"
Pull=never
StopTimeout=7
HealthCmd=test -e /tmp/ok
HealthInterval=2s
HealthOnFailure=none
ReadOnly=yes
Memory=64m
CPUs=0.5

[Service]
Restart=always
"""


def expand(text: str, name: str = "box.service") -> str:
    return expand_unit(parse_unit(text), name).serialize()


def verify(tmp_path: Path, name: str, text: str) -> None:
    """systemd's own parser: any complaint (even a warning) fails."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    path = tmp_path / name
    path.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    # Only docker.service is allowed to be missing (hosts share the machine's dockerd).
    lines = [
        line
        for line in result.stderr.splitlines()
        if "docker.service" not in line and "/usr/bin/docker" not in line
    ]
    assert result.returncode == 0 and not lines, result.stderr


def test_every_key_expands_to_one_docker_run(tmp_path: Path) -> None:
    assert len(CONTAINER_KEYS) == 21  # HealthOnFailure= is the agent's, docker gets nothing
    unit = expand_unit(parse_unit(EVERY_KEY), "box.service")
    assert unit.values("Service", "ExecStart") == [
        "/usr/bin/docker run --name box-%p-%m --rm --init --pull=never"
        " --publish=127.0.0.1:8080:80/tcp --publish=9000-9001:9000-9001"
        ' --env=A=1 "--env=B=two words" "--env=C=50%%" --env-file=/etc/box.env'
        " --volume=/srv/data:/data:ro --volume=named:/cache --network=host --label=team=web"
        ' --user=1000:1000 --workdir=/data --entrypoint=/bin/sh "--health-cmd=test -e /tmp/ok"'
        " --health-interval=2s --memory=64m --cpus=0.5 --read-only --cap-add NET_ADMIN"
        ' --add-host=x:127.0.0.1 local/busybox:latest sh -c "sleep 1000" "a b"'
    ]
    assert unit.values("Service", "ExecStartPre") == ["-/usr/bin/docker rm -f box-%p-%m"]
    assert unit.values("Service", "ExecStop") == ["/usr/bin/docker stop -t 7 box-%p-%m"]
    assert unit.values("Service", "Type") == ["exec"]
    assert unit.values("Service", "KillMode") == ["mixed"]
    assert unit.values("Service", "SuccessExitStatus") == ["143"]
    assert unit.values("Service", "TimeoutStopSec") == ["22"]
    (post,) = unit.values("Service", "ExecStartPost")
    assert post.startswith("/bin/sh -c ") and post.endswith(" fleetpy-health-wait box-%p-%m")
    assert unit.values("Service", "Restart") == ["always"]
    assert unit.values("Unit", "After") == ["docker.service"]
    assert "X-Container" in unit.sections() and "Container" not in unit.sections()
    verify(tmp_path, "box.service", unit.serialize())


@pytest.mark.parametrize(
    ("name", "container"),
    [
        ("web.service", "fleetpy-%p-%m"),
        ("web@.service", "fleetpy-%p-%i-%m"),
        ("web@3.service", "fleetpy-%p-%i-%m"),
    ],
)
def test_default_container_name_is_unique_per_host_and_instance(
    tmp_path: Path, name: str, container: str
) -> None:
    text = expand("[Container]\nImage=local/busybox\n", name)
    assert f"--name {container} " in text
    assert f"docker stop -t 10 {container}\n" in text
    verify(tmp_path, name.replace("@.", "@1."), text)


def test_fleetpys_lines_survive_a_reset_and_keep_the_units_own_layout(tmp_path: Path) -> None:
    # Kept as written (an empty assignment, keys repeated apart, a continued value):
    # fleetpy's own lines go after the unit's reset of the key, so systemd keeps them.
    source = parse_unit(
        "[Unit]\nAfter=network.target\nWants=x.service\nAfter=x.service\n\n"
        "[Container]\nImage=local/busybox\nExec=sh -c \\\n  'sleep 1000'\n\n"
        "[Service]\nExecStartPre=/bin/false\nExecStartPre=\nExecStartPre=/bin/true\n"
        "Restart=always\n"
    )
    expanded = expand_unit(source, "box.service")
    pre = expanded.values("Service", "ExecStartPre")
    assert pre[0].startswith("-/usr/bin/docker rm -f ") and pre[1:] == ["/bin/true"]
    assert expanded.values("Unit", "After") == ["docker.service", "network.target", "x.service"]
    assert source_of(expanded, "box.service") == source
    assert expand_unit(expanded, "box.service") == expanded
    verify(tmp_path, "box.service", expanded.serialize())


INJECTION = ["a b", '"', "'", "$HOME", "${HOME}", "$$", "%n", "%%", ";", "a;b", "\\", "\\n"]


@pytest.mark.parametrize("value", INJECTION)
def test_injection_values_are_verified_by_systemd(tmp_path: Path, value: str) -> None:
    # Raw values in single-value keys; quoted and escaped in word lists.
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    text = (
        "[Container]\nImage=local/busybox\n"
        f"WorkingDir=/w{value}\nEntrypoint=/e{value}\nHealthCmd=h{value}\n"
        f"Exec=x {quoted}\nEnvironment=A={quoted}\nLabel=l={quoted}\n"
        f"Volume=/v{value.replace(':', '')}:/c\n"
    )
    source = parse_unit(text)
    assert split_words(f"x {quoted}", "test")[1] == value
    expanded = expand_unit(source, "box.service")
    verify(tmp_path, "box.service", expanded.serialize())
    assert source_of(expanded, "box.service") == source


# ----------------------------------------------------------------------------- the CLI


def test_cli_bad_value_is_one_line_and_writes_nothing(
    run: Run,
    units_dir: Path,
    registry: Registry,
) -> None:
    before = snapshot(registry)
    path = write(units_dir, "box.service", "[Container]\nImage=local/busybox\nVolume=data/x:/x\n")
    result = run("submit", path)
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "invalid [Container] Volume=data/x:/x in box.service: relative host path" in line
    path = write(units_dir, "box2.service", "[Container]\nImage=local/busybox\nImgae=x\n")
    result = run("start", "--no-block", path)
    assert result.exit_code == 1
    assert "did you mean Image=?" in one_error_line(result)
    text = "[Container]\nImage=local/busybox\nHealthCmd=true\nHealthOnFailure=kill\n"
    result = run("submit", write(units_dir, "box3.service", text))
    assert result.exit_code == 1
    assert (
        "invalid [Container] HealthOnFailure=kill in box3.service: expected restart or none"
        in one_error_line(result)
    )
    assert snapshot(registry) == before


def test_cli_cat_shows_source_and_expanded(
    run: Run,
    units_dir: Path,
    registry: Registry,
) -> None:
    source = "[Container]\nImage=local/busybox\nExec=sleep 1000\n"
    path = write(units_dir, "box@.service", source)
    assert run("submit", path).exit_code == 0
    stored = registry.get_content(registry.list_units()["box@.service"].hash) or ""
    assert stored == expand(source, "box@.service")
    assert run("cat", "box@.service").output == source
    assert run("cat", "box@1.service").output == source
    assert run("cat", "--expanded", "box@.service").output == stored
    # The expansion resubmitted is the same unit; an instance name that cannot be a
    # container name is refused when the instance is started.
    (units_dir / "again").mkdir()
    assert run("submit", write(units_dir / "again", "box@.service", stored)).exit_code == 0
    result = run("start", "--no-block", "box@a:b.service")
    assert result.exit_code == 1
    assert "the instance 'a:b' of box@a:b.service" in one_error_line(result)


def test_example_container_units_render_expand_and_verify(tmp_path: Path) -> None:
    from fleetpy.client.arguments import read_unit_file
    from fleetpy.deploy.deployment import load_deployment, render_deployment

    rendered = render_deployment(load_deployment(ROOT / "units" / "containers"))
    assert [u.name for u in rendered] == [
        "cweb@1.service",
        "cweb@2.service",
        "cweb@3.service",
        "cmonitor.service",
    ]
    for unit in rendered:
        assert "[X-Container]" in unit.text and "ExecStart=/usr/bin/docker run" in unit.text
        verify(tmp_path, unit.name, unit.text)
    local = read_unit_file(str(ROOT / "units" / "web-container@.service"))
    verify(tmp_path, "web-container@1.service", local.text)


def test_the_example_stack_reserves_for_its_database_and_its_web_tier_requires_it(
    tmp_path: Path,
) -> None:
    from fleetpy.deploy.deployment import load_deployment, render_deployment
    from fleetpy.resources import Resources

    rendered = {u.name: u for u in render_deployment(load_deployment(ROOT / "units" / "stack"))}
    assert list(rendered) == ["db.service", "web-db.service"]
    db, web = rendered["db.service"], rendered["web-db.service"]
    assert db.options.reserves == Resources(1024**3, 500)  # its container's Memory=, CPUs=
    assert not db.options.requires
    assert web.options.requires == ("db.service",) and web.options.binds_to == ("db.service",)
    for unit in rendered.values():
        verify(tmp_path, unit.name, unit.text)
