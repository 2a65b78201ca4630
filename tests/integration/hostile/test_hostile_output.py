"""Class 9: output hygiene. Control characters from file names, unit contents and
environment values are shown escaped (a crafted name cannot retitle the terminal), and
a failed write to standard output is one line, not a traceback. fleetpy in process
(a closed pipe, which needs a process: tests/system/hostile/test_hostile_output.py)."""

from __future__ import annotations

import pytest

from support.hostile_harness import CONTROL, Hostile, assert_one_clean_error

EVIL = "\x1b]0;pwned\x07"


@pytest.mark.parametrize(
    "args, shown",
    [
        (("submit", f"evil{EVIL}.service"), "\\x1b]0;pwned\\x07"),
        (("start", "--no-block", "/tmp/fleetpy-nonexistent-\x1b[2J/x.service"), "\\x1b[2J"),
        (("stop", "a\nb.service"), "a\\nb.service"),
        (("destroy", "x\x9b31m.service"), "\\x9b"),
        (("cat", "bidi\u202eecivres.service"), "\\u202e"),
        (("list-units", "--fields", f"unit,{EVIL}"), "\\x1b]0;pwned\\x07"),
        (("--endpoint", "http://\x1b[31mred:2379", "list-units"), "\\x1b[31m"),
        ((f"--{EVIL}",), "\\x1b"),
    ],
)
def test_control_characters_in_arguments_are_escaped(
    seeded: Hostile, args: tuple[str, ...], shown: str
) -> None:
    code = 64 if args[0].startswith("--\x1b") or args[:2] == ("list-units", "--fields") else 1
    line = seeded.rejects(*args, code=code)
    assert shown in line


@pytest.mark.parametrize(
    "variable, value",
    [
        ("FLEETPY_ENDPOINT", f"http://{EVIL}:1"),
        ("FLEETPY_ETCD_PREFIX", f"/x{EVIL}"),
        ("FLEETPY_REQUEST_TIMEOUT", f"5{EVIL}"),
        ("FLEETPY_CA_FILE", f"/tmp/ca{EVIL}.pem"),
    ],
)
def test_control_characters_in_environment_values_are_escaped(
    seeded: Hostile, variable: str, value: str
) -> None:
    line = seeded.rejects("list-units", env={variable: value})
    assert "\\x1b]0;pwned\\x07" in line or "\\x1b" in line


def test_agent_settings_with_control_characters(seeded: Hostile) -> None:
    seeded.rejects(
        "agent", "--unit-manager", "simulated", "--machine-id", f"m{EVIL}", match=r"\\x1b"
    )
    seeded.rejects(
        "agent", "--unit-manager", "simulated", "--metadata", f"role=a{EVIL}", match=r"\\x1b"
    )


def test_unit_contents_are_escaped_by_cat(hostile: Hostile) -> None:
    path = hostile.write(
        "ctl.service", f"[Unit]\nDescription=hi{EVIL}there\n\n[Service]\nExecStart=/bin/true\tx\n"
    )
    hostile.ok("submit", path)
    outcome = hostile.ok("cat", "ctl.service")
    assert not CONTROL.search(outcome.stdout.replace("\t", ""))
    assert "Description=hi\\x1b]0;pwned\\x07there" in outcome.stdout
    assert "ExecStart=/bin/true\tx" in outcome.stdout  # tabs and newlines are kept


def test_render_output_is_escaped_on_stdout(hostile: Hostile) -> None:
    template = hostile.write("t.service.j2", "[Unit]\nDescription={{ d }}\n")
    outcome = hostile.ok("render", template, "--set", f"d=a{EVIL}b")
    assert "\\x1b]0;pwned\\x07" in outcome.stdout and not CONTROL.search(outcome.stdout)


@pytest.mark.parametrize(
    "args",
    [
        ("list-unit-files",),
        ("list-units",),
        ("list-machines",),
        ("list-unit-files", "-o", "json"),
        ("cat", "hello.service"),
        ("--version",),
        ("destroy", "no-such-glob-*"),
    ],
)
def test_a_failed_write_to_stdout_is_one_line(seeded: Hostile, args: tuple[str, ...]) -> None:
    with open("/dev/full", "wb") as full:
        outcome = seeded.run(*args, stdout=full.fileno())
    if args[0] == "destroy":  # fails before printing anything: its own one line
        assert_one_clean_error(outcome, match="no submitted unit matches")
        return
    if args[0] == "list-machines" and outcome.code == 0:
        return  # nothing to print (no machines): nothing to fail
    assert_one_clean_error(outcome, match="cannot write output: No space left on device")
