"""Unit files as fleet users wrote them (tests/fleet_units/, see its README) through
fleetpy's own CLI against a real etcd: accepted, with a warning where fleetpy reads a
line differently from how it is written, stored as written (continuation lines, empty
assignments, keys repeated apart, in their order) and a second submit of the unchanged
files is a no-op. fleet's own fleetctl drives the same files through `fleetpy api` in
tests/system/test_api_server.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetpy.registry import Registry
from fleetpy.unitfile.unit import parse_unit

from support.cli_run import Run
from support.fleet_unit_files import STARTED, UNIT_FILES, copy_unit_files
from support.paths import FLEET_UNITS


@pytest.fixture
def fleet_units(units_dir: Path) -> Path:
    return copy_unit_files(units_dir)


def test_fleets_unit_files_are_submitted_as_written(
    run: Run, registry: Registry, fleet_units: Path
) -> None:
    paths = [str(fleet_units / name) for name in UNIT_FILES]
    result = run("submit", *paths)
    assert result.exit_code == 0, result.output + result.stderr
    warnings = result.stderr.strip().splitlines()
    assert all(line.startswith("fleetpy: warning: ") for line in warnings), warnings
    for expected in (
        "X-Conflicts= in registry-web@.service is fleet's old name of Conflicts=",
        "X-ConditionMachineMetadata= in registry-web@.service is fleet's old name",
        "X-ConditionMachineOf= in registry-web-announce@.service is fleet's old name",
        "Conflicts=registry-data.service in registry-data.service names the unit itself",
        "Conflicts=snapshot.timer in snapshot.timer names the unit itself",
        "X-ConditionMachineBootID= in pinned.service is read as MachineID=",
    ):
        assert any(expected in line for line in warnings), (expected, warnings)
    assert sorted(registry.list_units()) == UNIT_FILES

    # Stored as written: the continued lines, the empty assignments, Requires=/After=
    # in their order; only comments and blank lines go.
    cat = run("cat", "registry-web@.service")
    assert cat.exit_code == 0
    assert cat.output == (
        "[Unit]\nDescription=Registry front end %i\nRequires=docker.service\n"
        "After=docker.service\nRequires=registry-data.service\nAfter=registry-data.service\n\n"
        "[Service]\nTimeoutStartSec=0\nEnvironmentFile=-/etc/environment\n"
        "ExecStartPre=-/usr/bin/docker kill registry-web-%i\n"
        "ExecStartPre=-/usr/bin/docker rm registry-web-%i\n"
        "ExecStart=/usr/bin/docker run --rm --name registry-web-%i \\\n"
        "    --volumes-from registry-data \\\n"
        "    -p ${COREOS_PRIVATE_IPV4}:5000:5000 \\\n"
        "    -e SETTINGS_FLAVOR=local \\\n"
        "    local/registry:2\n"
        "ExecStop=/usr/bin/docker stop registry-web-%i\n\n"
        "[X-Fleet]\nX-Conflicts=registry-web@*.service\n"
        'X-ConditionMachineMetadata="role=web"\n'
    )
    data = run("cat", "registry-data.service").output
    assert "\nEnvironment=\n" in data and "\nExecStop=\n" in data
    for name in UNIT_FILES:
        text = (FLEET_UNITS / name).read_text()
        assert run("cat", name).output == parse_unit(text).serialize()

    # The same files again: nothing differs, nothing is written.
    before = {n: (u.hash, u.revision) for n, u in registry.list_units().items()}
    again = run("submit", *paths)
    assert again.exit_code == 0, again.output + again.stderr
    assert {n: (u.hash, u.revision) for n, u in registry.list_units().items()} == before


def test_fleets_unit_files_start(run: Run, registry: Registry, fleet_units: Path) -> None:
    templates = [str(fleet_units / n) for n in UNIT_FILES if "@." in n]
    files = [str(fleet_units / n) for n in STARTED if (fleet_units / n).exists()]
    instances = [n for n in STARTED if not (fleet_units / n).exists()]
    assert run("submit", *templates).exit_code == 0
    result = run("start", "--no-block", *files, *instances)
    assert result.exit_code == 0, result.output + result.stderr
    units = registry.list_units()
    assert all(units[n].desired == "launched" for n in STARTED)
    # Started again from the unchanged files: the same units, no "different contents".
    again = run("start", "--no-block", *files, *instances)
    assert again.exit_code == 0, again.output + again.stderr
    assert {n: u.hash for n, u in registry.list_units().items()} == {
        n: u.hash for n, u in units.items()
    }


def test_a_key_fleet_never_knew_is_still_refused(run: Run, units_dir: Path) -> None:
    path = units_dir / "typo.service"
    path.write_text("[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nX-ConditionMachinOf=db.service\n")
    result = run("submit", str(path))
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "fleetpy: error: unknown [X-Fleet] option X-ConditionMachinOf= in typo.service; "
        "did you mean X-ConditionMachineOf=?"
    )
