"""[5] bad input: a broken deployment directory is one line naming the file (and line, or
template and instance), exit 1, and nothing is applied: rendering is all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.hostile_harness import Hostile

GOOD_TEMPLATE = "[Service]\nExecStart=/bin/echo {{ message | systemd_quote }}\n"


def deployment(
    root: Path, yaml: str, template: str = GOOD_TEMPLATE, name: str = "app.service.j2"
) -> str:
    directory = root / "deploy"
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(template)
    (directory / "fleetpy.yaml").write_text(yaml)
    return str(directory)


UNIT = "units:\n  - {name: app@.service, template: app.service.j2, instances: 2}\n"
CASES = [
    ("name: Bad_Name\n" + UNIT, None, r"fleetpy.yaml: name: expected a deployment name"),
    ("name: x\n", None, r"units: expected a list of units"),
    ("name: x\ncolour: blue\n" + UNIT, None, r"unknown key 'colour'"),
    (
        "name: x\nunits:\n  - {name: app@.service, template: app.service.j2}\n",
        None,
        r"app@.service is a template: say which instances",
    ),
    (
        "name: x\nunits:\n  - {name: app.service, template: app.service.j2, instances: 2}\n",
        None,
        r"app.service is not a template",
    ),
    (
        "name: x\nunits:\n  - {name: app@.service, template: ../../etc/passwd, instances: 1}\n",
        None,
        r"must be inside the deployment directory",
    ),
    (
        "name: x\nunits:\n  - {name: app@.service, template: /etc/passwd, instances: 1}\n",
        None,
        r"must be inside the deployment directory",
    ),
    (
        "name: x\nunits:\n  - {name: app@.service, template: missing.j2, instances: 1}\n",
        None,
        r"missing.j2: No such file or directory",
    ),
    (
        "name: x\nunits:\n  - {name: app@.service, template: app.service.j2, instances: 0}\n",
        None,
        r"expected 1 to 10000 instances",
    ),
    (
        "name: x\nunits:\n  - {name: app@.service, template: app.service.j2, instances: [a, a]}\n",
        None,
        r"instance names repeat",
    ),
    (
        "name: x\nunits:\n  - {name: app@.service, template: app.service.j2, "
        "instances: ['bad/name']}\n",
        None,
        r"invalid unit name",
    ),
    (
        "name: x\nunits:\n  - {name: app@.service, template: app.service.j2, instances: 1,\n"
        "     instance_values: {'9': {}}}\n",
        None,
        r"'9' is not one of its instances",
    ),
    (
        "name: x\n" + UNIT + "  - {name: app@.service, template: app.service.j2, instances: 1}\n",
        None,
        r"unit app@.service is listed twice",
    ),
    (
        "name: x\nvalues: {message: hi}\nrollout: {max_unavailable: 0}\n" + UNIT,
        None,
        r"rollout.max_unavailable: expected a whole number from 1",
    ),
    ("name: x\nvalues: [1]\n" + UNIT, None, r"values: expected a mapping"),
    ("name: x\nunits: [\n", None, r"fleetpy.yaml:\d+: "),
    ("name: x\n" + UNIT, None, r"app.service.j2:2: 'message' is undefined"),
    (
        'name: x\nvalues: {message: "a\\nb"}\n' + UNIT,
        "[Service]\nExecStart=/bin/echo {{ message }}\n",
        r"would span lines",
    ),
    (
        "name: x\nvalues: {message: hi}\n" + UNIT,
        "[Service]\nExecStart=/bin/echo {{ message }}\n\n[X-Fleet]\nMachineOf=%i\n",
        r"app.service.j2 \(instance 1\) renders an invalid app@1.service: ",
    ),
    ("name: x\nvalues: {message: hi}\n" + UNIT, "{% for %}", r"app.service.j2:1: "),
    (
        "name: x\nvalues: {message: hi}\n" + UNIT,
        "{{ cycler.__init__.__globals__.os.system('id') }}",
        r"unsafe|not safely callable|"
        r"access to attribute",
    ),
]


@pytest.mark.parametrize(
    "yaml, template, match", CASES, ids=[f"case{i}" for i in range(len(CASES))]
)
def test_broken_deployments_are_one_line_and_apply_nothing(
    seeded: Hostile, yaml: str, template: str | None, match: str
) -> None:
    directory = deployment(seeded.workdir, yaml, template or GOOD_TEMPLATE)
    seeded.rejects("plan", directory, match=match)
    seeded.rejects("apply", directory, match=match)


def test_missing_directory_and_file(seeded: Hostile) -> None:
    seeded.rejects("apply", "/nonexistent-deploy", match="No such file or directory")
    empty = seeded.workdir / "empty"
    empty.mkdir(exist_ok=True)
    seeded.rejects("plan", str(empty), match="fleetpy.yaml: No such file or directory")
