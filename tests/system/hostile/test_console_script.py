"""The console script itself gives what the in-process runs give (tests/integration/hostile/
run fleetpy in process: tests/support/inprocess.py): one sample of each class of hostile
case, run both ways against the same seeded etcd, must agree byte for byte in exit code,
standard output and standard error, and pass the case's own checks as the script.
(Failover, the closed pipe and the daemons beside malformed records run only as processes:
test_hostile_failover.py, test_hostile_output.py, test_hostile_records.py here.)"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pytest

from support.hostile_harness import (
    CONTROL,
    SERVICE,
    Hostile,
    Outcome,
    Via,
    assert_one_clean_error,
)

TEMPLATE = "[Unit]\nDescription={{ description }}\n\n[Service]\nExecStart=/bin/true\n"


@dataclass(frozen=True)
class Sample:
    """ARGV after PREPARE made its files; CODE, and MATCH searched in the error line (or in
    standard output, for code 0)."""

    prepare: Callable[[Hostile], tuple[str, ...]]
    code: int
    match: str
    env: Mapping[str, str] = field(default_factory=dict)
    stdout_to: str | None = None  # a file to give as standard output instead of a pipe


def _fifo_template(cluster: Hostile) -> tuple[str, ...]:
    path = cluster.workdir / "fifo" / "t.service.j2"
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        os.mkfifo(path)
    return ("render", str(path), "--set", "description=x")


def _deployment(cluster: Hostile) -> tuple[str, ...]:
    cluster.write("deploy/app.service.j2", "[Service]\nExecStart=/bin/echo {{ message }}\n")
    cluster.write(
        "deploy/fleetpy.yaml",
        "name: Bad_Name\nunits:\n  - {name: app@.service, template: app.service.j2, "
        "instances: 2}\n",
    )
    return ("plan", str(cluster.workdir / "deploy"))


SAMPLES: dict[str, Sample] = {
    "cluster": Sample(
        lambda c: ("cluster", "status", "--name", "nothere"), 1, r"no local cluster named nothere"
    ),
    "cluster-remote": Sample(
        lambda c: ("ssh", "zzzz"), 1, r"no machine with an id starting 'zzzz'"
    ),
    "cluster-usage": Sample(lambda c: ("journal", "--lines", "0", "hello.service"), 64, r"--lines"),
    "deploy": Sample(_deployment, 1, r"fleetpy.yaml: name: expected a deployment name"),
    "files": Sample(_fifo_template, 1, r"is not a regular file \(a FIFO\)"),
    "files-stdin": Sample(
        lambda c: ("render", c.write("ok.service.j2", TEMPLATE), "--values", "/dev/stdin"),
        1,
        r"/dev/stdin is not a regular file \(a symbolic link to a FIFO\)",
    ),
    "output": Sample(lambda c: ("stop", "a\nb.service"), 1, r"a\\nb\.service"),
    "output-env": Sample(
        lambda c: ("list-units",), 1, r"\\x1b", env={"FLEETPY_ETCD_PREFIX": "/x\x1b]0;pwned\x07"}
    ),
    "output-full-disk": Sample(
        lambda c: ("list-unit-files",),
        1,
        r"cannot write output: No space left on device",
        stdout_to="/dev/full",
    ),
    "output-ok": Sample(lambda c: ("cat", "hello.service"), 0, re.escape(SERVICE)),
    "paths": Sample(
        lambda c: ("destroy", "/nonexistent-dir/*.service"), 1, r"/nonexistent-dir/\*\.service"
    ),
    "records": Sample(
        lambda c: ("--etcd-prefix", f"{c.prefix}/unit", "destroy", "hello.service"),
        1,
        r"lies inside the fleetpy prefix",
    ),
    "templates": Sample(
        lambda c: (
            "render",
            os.path.basename(
                c.write("escape.service.j2", "[Unit]\n{{ cycler.__init__.__globals__.os }}\n")
            ),
        ),
        1,
        r"^fleetpy: error: escape\.service\.j2:2: .*unsafe",
    ),
    "tls-limits": Sample(
        lambda c: ("--request-timeout", "nan", "list-units"), 1, r"request-timeout"
    ),
    "tls-limits-env": Sample(
        lambda c: ("list-units",),
        1,
        r"REQUEST_TIMEOUT|request-timeout",
        env={"FLEETPY_REQUEST_TIMEOUT": "inf"},
    ),
    "units": Sample(
        lambda c: (
            "submit",
            c.write("typo.service", "[Service]\nExecStart=/bin/true\n\n[X-Flet]\nA=1\n"),
        ),
        1,
        r"unknown section \[X-Flet\] in typo.service; did you mean \[X-Fleet\]\?",
    ),
    "yaml": Sample(
        lambda c: (
            "render",
            c.write("env.service.j2", "[Service]\nEnvironment=A={{ a }}\n"),
            "--values",
            c.write("bad.yaml", "a: 1\nb: !!int abc\n"),
        ),
        1,
        r"bad\.yaml:2: .*invalid !!int 'abc'",
    ),
    "version": Sample(lambda c: ("--version",), 0, r"\d"),
}


def _run(cluster: Hostile, sample: Sample, args: tuple[str, ...], via: Via) -> Outcome:
    if sample.stdout_to is None:
        return cluster.run(*args, env=sample.env, via=via)
    with open(sample.stdout_to, "wb") as target:
        return cluster.run(*args, env=sample.env, via=via, stdout=target.fileno())


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_console_script_gives_what_the_in_process_run_gives(seeded: Hostile, name: str) -> None:
    sample = SAMPLES[name]
    args = sample.prepare(seeded)
    before = seeded.state()
    script = _run(seeded, sample, args, Via.SCRIPT)
    if sample.code == 0:
        assert script.code == 0, script.describe()
        assert "Traceback" not in script.stderr and not CONTROL.search(script.stdout)
        assert re.search(sample.match, script.stdout), script.describe()
    else:
        assert_one_clean_error(script, sample.code, sample.match)
    seeded.assert_unchanged(before, script)
    in_process = _run(seeded, sample, args, Via.IN_PROCESS)
    assert in_process == script
