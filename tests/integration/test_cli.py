"""The CLI end to end against a real etcd: verbs, output formats, and user errors.

Here: the tests that need the session's etcd or a short-lived helper process (README "Tests"); the others are in
tests/system/test_cli.py, tests/pure/test_cli.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from fleetpy.cli import app
from fleetpy.cluster.etcd import EtcdServer
from fleetpy.model.changes import PlaceUnit, StoreReason, UnitChange
from fleetpy.model.records import MachineRecord, UnitState
from fleetpy.registry import Registry
from fleetpy.states import DesiredState

from support.cli_helpers import SERVICE, one_error_line, snapshot, write
from support.cli_run import Run

# No FLEETPY_* setting of the caller reaches these tests (support.cli_helpers).
pytestmark = pytest.mark.usefixtures("clean_env")


# ----------------------------------------------------------------------------- verbs


def test_submit_start_list_cat_stop_unload_destroy(
    run: Run, registry: Registry, units_dir: Path
) -> None:
    a, b = write(units_dir, "web1.service"), write(units_dir, "web2.service", SERVICE + "#\nA=1\n")
    result = run("submit", a, b)
    assert result.exit_code == 0, result.output
    assert {d for _, d in snapshot(registry).values()} == {"inactive"}

    result = run("start", "--no-block", "web1.service", "web2.service")
    assert result.exit_code == 0, result.output
    assert "Triggered unit web1.service start" in result.stdout
    assert {d for _, d in snapshot(registry).values()} == {"launched"}

    data = json.loads(run("list-unit-files", "-o", "json").stdout)
    assert [row["unit"] for row in data] == ["web1.service", "web2.service"]
    assert all(
        set(row)
        == {"unit", "hash", "desired_state", "state", "machine", "reason", "owner", "origin"}
        for row in data
    )
    assert data[0]["hash"] == registry.get_unit("web1.service").hash  # type: ignore[union-attr]
    assert data[0]["desired_state"] == "launched" and data[0]["machine"] is None

    result = run("cat", "web1.service")
    assert result.exit_code == 0 and result.stdout == SERVICE

    assert run("stop", "--no-block", "web*").exit_code == 0
    assert {d for _, d in snapshot(registry).values()} == {"loaded"}
    assert run("unload", "--no-block", "web1.*").exit_code == 0
    assert snapshot(registry)["web1.service"][1] == "inactive"
    result = run("destroy", "web?.service")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["Destroyed web1.service", "Destroyed web2.service"]
    assert snapshot(registry) == {}


def test_template_instance_by_name(run: Run, registry: Registry, units_dir: Path) -> None:
    assert run("submit", write(units_dir, "app@.service")).exit_code == 0
    result = run("start", "--no-block", "app@1.service", "app@2.service")
    assert result.exit_code == 0, result.output
    units = registry.list_units()
    assert units["app@1.service"].hash == units["app@.service"].hash
    assert units["app@2.service"].desired == "launched"
    assert run("cat", "app@7.service").stdout == SERVICE
    result = run("start", "--no-block", "app@.service")
    assert result.exit_code == 1
    assert "app@.service is a template" in one_error_line(result)


def test_instance_by_name_submits_its_template_file_beside_it(
    run: Run, registry: Registry, units_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As fleetctl: `start t@3.service` with t@.service in the current directory (or
    `start units/t@3.service` with units/t@.service) submits the template first."""
    template = SERVICE + "\n[X-Fleet]\nMachineMetadata=instance=%i\n"
    write(units_dir, "t@.service", template)
    monkeypatch.chdir(units_dir)
    result = run("start", "--no-block", "t@3.service", "t@4.service")
    assert result.exit_code == 0, result.output
    assert "Triggered unit t@3.service start" in result.stdout
    units = registry.list_units()
    assert sorted(units) == ["t@.service", "t@3.service", "t@4.service"]
    assert units["t@.service"].desired == "inactive"
    assert {units[n].hash for n in units} == {units["t@.service"].hash}
    assert units["t@4.service"].desired == "launched"
    assert run("cat", "t@3.service").stdout == template

    # From elsewhere, through the instance's path: its template beside it.
    monkeypatch.chdir(units_dir.parent)
    write(units_dir, "u@.service")
    assert run("load", "--no-block", "units/u@1.service").exit_code == 0
    units = registry.list_units()
    assert units["u@1.service"].desired == "loaded" and units["u@.service"].desired == "inactive"
    assert run("submit", "units/u@2.service").exit_code == 0  # the template is submitted
    assert registry.list_units()["u@2.service"].desired == "inactive"

    # A submitted template with other contents than the file beside the name: refused,
    # as a file of other contents is (fleetctl warned, then used the submitted one).
    write(units_dir, "t@.service", template.replace("Description=web", "Description=edited"))
    before = snapshot(registry)
    result = run("start", "--no-block", "units/t@5.service")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "t@5.service: its template's file units/t@.service:" in line, line
    assert "t@.service is already submitted with different contents" in line
    assert snapshot(registry) == before
    # An instance that exists is what it is: the file beside it is not read.
    assert run("stop", "--no-block", "t@3.service").exit_code == 0
    assert run("start", "--no-block", "units/t@3.service").exit_code == 0
    # No template beside, no file: the path is an error, as before.
    result = run("start", "--no-block", "units/v@1.service")
    assert result.exit_code == 1 and "units/v@1.service" in one_error_line(result)


def test_load_submits_files_and_global_flag(run: Run, registry: Registry, units_dir: Path) -> None:
    path = write(units_dir, "mon.service", SERVICE + "\n[X-Fleet]\nGlobal=true\n")
    assert run("load", "--no-block", path).exit_code == 0
    record = registry.get_unit("mon.service")
    assert record is not None and record.is_global and record.desired == "loaded"
    data = json.loads(run("list-unit-files", "--output", "json").stdout)
    assert data[0]["machine"] is None
    assert run("list-unit-files", "--no-legend").stdout.split() == [
        "mon.service",
        record.hash[:7],
        "loaded",
        "inactive",
        "-",
    ]


# ----------------------------------------------------------------------------- user errors


BAD_TEXT = {
    "syntax.service": "[Service]\nExecStart=/bin/true\nno equals sign\n",
    "combo.service": "[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\nReplaces=x.service\n",
    "value.service": "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMaxPerMachine=zero\n",
}


@pytest.mark.parametrize(
    "args, message",
    [
        (["start", "bad name.service"], "invalid unit name 'bad name.service'"),
        (["start", "web.nope"], "unknown type suffix"),
        (["start", "{dir}/syntax.service"], "syntax.service:3:"),
        (["start", "{dir}/combo.service"], "cannot be combined"),
        (["load", "{dir}/value.service"], "MaxPerMachine=zero"),
        (["submit", "{dir}/missing.service"], "missing.service"),
        (["start", "ghost.service"], "unit ghost.service is not submitted"),
        (["start", "ghost@1.service"], "nor its template ghost@.service"),
        (["stop", "loaded.service"], "unit loaded.service is not launched (desired state loaded)"),
        (["stop", "zzz*"], "no submitted unit matches 'zzz*'"),
        (["destroy", "ghost.service"], "unit ghost.service is not submitted"),
        (["unload", "ghost.service"], "unit ghost.service is not submitted"),
        (["cat", "ghost.service"], "unit ghost.service is not submitted"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    run: Run, registry: Registry, units_dir: Path, args: list[str], message: str
) -> None:
    for name, text in BAD_TEXT.items():
        write(units_dir, name, text)
    assert run("load", "--no-block", write(units_dir, "loaded.service")).exit_code == 0
    good = write(units_dir, "good.service", SERVICE + "#\nB=1\n")
    before = snapshot(registry)
    args = [a.format(dir=units_dir) for a in args]
    extra = [good] if args[0] in ("start", "load", "submit") else []
    result = run(
        *args[:1],
        *(["--no-block"] if args[0] != "submit" and args[0] in ("start", "load") else []),
        *extra,
        *args[1:],
    )
    assert result.exit_code == 1, result.output
    assert message in one_error_line(result)
    assert snapshot(registry) == before


def test_usage_errors_exit_64(run: Run, units_dir: Path, tmp_path: Path) -> None:
    result = run("list-units", "--fields", "unit,bogus")
    assert result.exit_code == 64
    line = one_error_line(result)
    assert "unknown field 'bogus'" in line and "unit, machine, load, active, sub" in line
    assert run("list-units", "-o", "yaml").exit_code == 64
    assert run("start").exit_code == 64
    assert run("frobnicate").exit_code == 64
    assert run("git").exit_code == 64  # help shown, nothing done
    assert run().exit_code == 64


def test_bad_setting_value(etcd: EtcdServer) -> None:
    result = CliRunner().invoke(
        app, ["--endpoint", etcd.endpoint, "--request-timeout", "soon", "list-units"]
    )
    assert result.exit_code == 1
    assert "--request-timeout" in one_error_line(result)


# ----------------------------------------------------------------------------- blocking


def test_blocking_start_without_engine_times_out(run: Run, units_dir: Path) -> None:
    began = time.monotonic()
    result = run("start", "--block-attempts", "2", write(units_dir, "a.service"))
    assert 1.9 < time.monotonic() - began < 5
    assert result.exit_code == 1
    assert one_error_line(result, progress=True) == (
        "fleetpy: error: timed out after 2s waiting for a.service "
        "to be launched (no engine is running)"
    )


def test_blocking_start_reports_engine_reason(
    run: Run, registry: Registry, units_dir: Path
) -> None:
    lease = registry.grant_lease(30)
    assert registry.campaign("test-engine", lease)
    registry.engine_write("test-engine", [[StoreReason("a.service", "no machines are alive")]])
    result = run("start", "--block-attempts", "1", write(units_dir, "a.service"))
    assert result.exit_code == 1
    assert one_error_line(result, progress=True).endswith(
        "waiting for a.service to be launched (not placed: no machines are alive)"
    )


@pytest.fixture
def agent_thread(registry: Registry) -> Iterator[Callable[[str, str, float], None]]:
    """Start a fake agent that reports `unit` as `active` after a delay. Its machine
    registers at once, before the CLI runs: the CLI's watches of machines and of states
    progress independently, so a machine registered while it waits could reach its view
    after the state (the progress line would lack the IP)."""
    threads: list[threading.Thread] = []

    def start(unit: str, active: str, delay: float) -> None:
        lease = registry.grant_lease(30)
        registry.register_machine(MachineRecord("a" * 32, "10.1.2.3"), lease)

        def run() -> None:
            deadline = time.monotonic() + 10
            while registry.get_unit(unit) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            # The point: the report comes while the CLI waits (it reaches it by the watch);
            # the CLI in this process shows no sign of having begun to wait.
            time.sleep(delay)
            record = registry.get_unit(unit)
            assert record is not None
            registry.report_states(
                [
                    UnitState(
                        unit,
                        "a" * 32,
                        "loaded",
                        active,
                        "running" if active == "active" else "dead",
                        record.hash,
                    )
                ],
                lease,
            )

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    for thread in threads:
        thread.join(15)


def test_blocking_start_succeeds_when_the_agent_reports(
    run: Run, units_dir: Path, agent_thread: Callable[..., None]
) -> None:
    agent_thread("a.service", "active", 0.3)
    began = time.monotonic()
    result = run("start", "--block-attempts", "10", write(units_dir, "a.service"))
    assert result.exit_code == 0, result.output
    assert time.monotonic() - began < 5
    assert "Unit a.service launched on aaaaaaaa/10.1.2.3" in result.stdout
    assert "a.service: launched on aaaaaaaa/10.1.2.3" in result.stderr  # plain progress lines


def test_blocking_stop_and_unload(run: Run, registry: Registry, units_dir: Path) -> None:
    path = write(units_dir, "a.service")
    assert run("start", "--no-block", path).exit_code == 0
    lease = registry.grant_lease(30)
    machine = "b" * 32
    digest = registry.get_unit("a.service").hash  # type: ignore[union-attr]
    registry.report_states(
        [UnitState("a.service", machine, "loaded", "active", "running", digest)], lease
    )

    def later(action: Callable[[], None]) -> None:
        # The point: the report comes while the CLI waits (no sign shows it has begun).
        threading.Timer(0.3, action).start()

    later(
        lambda: registry.report_states(
            [UnitState("a.service", machine, "loaded", "inactive", "dead", digest)], lease
        )
    )
    result = run("stop", "--block-attempts", "5", "a.service")
    assert result.exit_code == 0, result.output
    assert "Unit a.service stopped on bbbbbbbb" in result.stdout
    later(lambda: registry.report_states([], lease, removed=[("a.service", machine)]))
    result = run("unload", "--block-attempts", "5", "a.service")
    assert result.exit_code == 0, result.output
    assert "Unit a.service unloaded" in result.stdout


def test_blocking_start_reports_failure_promptly(
    run: Run, units_dir: Path, agent_thread: Callable[..., None]
) -> None:
    agent_thread("a.service", "failed", 0.3)
    began = time.monotonic()
    result = run("start", "--block-attempts", "30", write(units_dir, "a.service"))
    assert time.monotonic() - began < 5
    assert result.exit_code == 1
    assert "a.service failed on aaaaaaaa/10.1.2.3: loaded/failed/dead" in one_error_line(
        result, progress=True
    )


# ----------------------------------------------------------------------------- listings


@pytest.fixture
def cluster(run: Run, registry: Registry, units_dir: Path) -> dict[str, str]:
    """Two machines, three units: one placed and running, one global, one unplaced."""
    m1, m2 = "1" * 32, "2" * 32
    lease = registry.grant_lease(60)
    registry.register_machine(MachineRecord(m1, "10.0.0.1", {"role": "web", "az": "b"}), lease)
    registry.register_machine(MachineRecord(m2, "10.0.0.2"), lease)
    assert (
        run(
            "start",
            "--no-block",
            write(units_dir, "web.service"),
            write(units_dir, "mon.service", SERVICE + "[X-Fleet]\nGlobal=true\n"),
        ).exit_code
        == 0
    )
    assert run("submit", write(units_dir, "idle.service", SERVICE + "#\nI=1\n")).exit_code == 0
    units = registry.list_units()
    from fleetpy.model.records import ScheduleEntry

    entry = ScheduleEntry("web.service", units["web.service"].hash, DesiredState.LAUNCHED, SERVICE)
    assert registry.campaign("test-engine", lease)
    registry.engine_write(
        "test-engine",
        [[PlaceUnit(m1, entry), StoreReason("idle.service", "desired state is inactive")]],
    )
    registry.report_states(
        [
            UnitState("web.service", m1, "loaded", "active", "running", units["web.service"].hash),
            UnitState("mon.service", m1, "loaded", "active", "running", units["mon.service"].hash),
            UnitState("mon.service", m2, "loaded", "failed", "failed", units["mon.service"].hash),
        ],
        lease,
    )
    return {
        "m1": m1,
        "m2": m2,
        "web": units["web.service"].hash,
        "mon": units["mon.service"].hash,
        "idle": units["idle.service"].hash,
    }


def table(result: Result) -> list[list[str]]:
    assert result.exit_code == 0, result.output
    return [line.split() for line in result.stdout.splitlines()]


def test_list_unit_files(run: Run, cluster: dict[str, str]) -> None:
    assert table(run("list-unit-files")) == [
        ["UNIT", "HASH", "DSTATE", "STATE", "TARGET"],
        ["idle.service", cluster["idle"][:7], "inactive", "inactive", "-"],
        ["mon.service", cluster["mon"][:7], "launched", "launched", "-"],
        ["web.service", cluster["web"][:7], "launched", "launched", "11111111"],
    ]
    assert table(run("list-unit-files", "--full", "--no-legend", "--fields", "unit,hash,target"))[
        2
    ] == ["web.service", cluster["web"], cluster["m1"]]
    assert table(run("list-unit-files", "-l", "--fields", "UNIT,dstate"))[0] == ["UNIT", "DSTATE"]
    data = json.loads(run("list-unit-files", "-o", "json", "--fields", "unit").stdout)
    assert data == [
        {
            "unit": "idle.service",
            "hash": cluster["idle"],
            "desired_state": "inactive",
            "state": "inactive",
            "machine": None,
            "reason": "desired state is inactive",
            "owner": None,
            "origin": None,
        },
        {
            "unit": "mon.service",
            "hash": cluster["mon"],
            "desired_state": "launched",
            "state": "launched",
            "machine": None,
            "reason": None,
            "owner": None,
            "origin": None,
        },
        {
            "unit": "web.service",
            "hash": cluster["web"],
            "desired_state": "launched",
            "state": "launched",
            "machine": cluster["m1"],
            "reason": None,
            "owner": None,
            "origin": None,
        },
    ]


def test_list_unit_files_reason_owner_and_origin(
    run: Run, cluster: dict[str, str], registry: Registry
) -> None:
    """The README's `--fields reason` (why a unit is not placed) in the table, and the
    table's owner and origin in -o json."""
    result = run("list-unit-files", "--fields", "unit,target,reason")
    assert result.stdout.splitlines() == [
        "UNIT          TARGET    REASON",
        "idle.service  -         desired state is inactive",
        "mon.service   -         -",
        "web.service   11111111  -",
    ]
    text = SERVICE + "#\nO=1\n"
    from fleetpy.unitfile.unit import parse_unit

    unit = parse_unit(text)
    registry.change_units(
        [
            UnitChange(
                "owned.service",
                text=unit.serialize(),
                hash=unit.hash,
                owner="web-stack",
                origin="0123456789abcdef0123",
            )
        ]
    )
    assert table(run("list-unit-files", "--fields", "unit,owner,origin", "--no-legend"))[2] == [
        "owned.service",
        "web-stack",
        "0123456789ab",
    ]
    data = {row["unit"]: row for row in json.loads(run("list-unit-files", "-o", "json").stdout)}
    assert (data["owned.service"]["owner"], data["owned.service"]["origin"]) == (
        "web-stack",
        "0123456789abcdef0123",
    )
    assert data["idle.service"]["owner"] is None and data["idle.service"]["origin"] is None


def test_list_units(run: Run, cluster: dict[str, str]) -> None:
    assert table(run("list-units")) == [
        ["UNIT", "MACHINE", "ACTIVE", "SUB"],
        ["mon.service", "11111111/10.0.0.1", "active", "running"],
        ["mon.service", "22222222/10.0.0.2", "failed", "failed"],
        ["web.service", "11111111/10.0.0.1", "active", "running"],
    ]
    assert table(run("list-units", "--no-legend", "--full", "--fields", "machine,load"))[0] == [
        f"{cluster['m1']}/10.0.0.1",
        "loaded",
    ]
    data = json.loads(run("list-units", "-o", "json").stdout)
    assert data[1] == {
        "unit": "mon.service",
        "machine": cluster["m2"],
        "load": "loaded",
        "active": "failed",
        "sub": "failed",
        "message": "",
        "health": "",  # a container's, with HealthCmd= (tests/integration/test_health.py)
    }
    fields = {"unit", "machine", "load", "active", "sub", "message", "health"}
    assert all(set(row) == fields for row in data)


NOTHING_MORE = {"cordon": None, "capacity": None, "used": None}  # machines of old agents


def test_list_machines(run: Run, cluster: dict[str, str]) -> None:
    assert table(run("list-machines")) == [  # fleetctl's columns while nothing is cordoned
        ["MACHINE", "IP", "METADATA"],
        ["11111111", "10.0.0.1", "az=b,role=web"],
        ["22222222", "10.0.0.2", "-"],
    ]
    assert table(run("list-machines", "--no-legend", "-l", "--fields", "machine")) == [
        [cluster["m1"]],
        [cluster["m2"]],
    ]
    assert json.loads(run("list-machines", "-o", "json").stdout) == [
        {
            "machine": cluster["m1"],
            "ip": "10.0.0.1",
            "metadata": {"az": "b", "role": "web"},
        }
        | NOTHING_MORE,
        {"machine": cluster["m2"], "ip": "10.0.0.2", "metadata": {}} | NOTHING_MORE,
    ]


def test_empty_lists(run: Run) -> None:
    assert table(run("list-unit-files")) == [["UNIT", "HASH", "DSTATE", "STATE", "TARGET"]]
    assert run("list-units", "--no-legend").stdout == ""
    assert json.loads(run("list-machines", "-o", "json").stdout) == []


# ----------------------------------------------------------------------------- render

TEMPLATE = """[Unit]
Description={{ description }}

[Service]
ExecStart={{ ["/bin/echo", greeting] | exec_args }}
"""


@pytest.fixture
def template_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "echo.service.j2").write_text(TEMPLATE)
    (tmp_path / "values.yaml").write_text("description: hello\ngreeting: hi there\n")
    return tmp_path


def test_render_to_stdout_with_values_and_set(template_dir: Path) -> None:
    result = CliRunner().invoke(
        app, ["render", "echo.service.j2", "--values", "values.yaml", "--set", "greeting=bye"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ("[Unit]\nDescription=hello\n\n[Service]\nExecStart=/bin/echo bye\n")


def test_render_to_file(template_dir: Path) -> None:
    result = CliRunner().invoke(
        app, ["render", "echo.service.j2", "--values", "values.yaml", "-o", "out/echo.service"]
    )
    assert result.exit_code == 1
    assert one_error_line(result) == (
        "fleetpy: error: cannot write out/echo.service: No such file or directory"
    )
    (template_dir / "out").mkdir()
    result = CliRunner().invoke(
        app, ["render", "echo.service.j2", "--values", "values.yaml", "-o", "out/echo.service"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert (
        (template_dir / "out/echo.service").read_text().endswith('ExecStart=/bin/echo "hi there"\n')
    )
    assert sorted(p.name for p in (template_dir / "out").iterdir()) == ["echo.service"]


@pytest.mark.parametrize(
    "files, args, message",
    [
        ({}, ["--set", "description=x"], "echo.service.j2:5: "),  # greeting undefined
        ({"echo.service.j2": "[Unit]\n{% if %}\n"}, [], "echo.service.j2:2: "),
        ({"bad.yaml": "a: 1\nb: [\n"}, ["--values", "bad.yaml"], "bad.yaml:"),
        ({}, ["--values", "missing.yaml"], "missing.yaml"),
        ({}, ["--set", "novalue"], "--set novalue"),
    ],
)
def test_render_errors_leave_no_file(
    template_dir: Path, files: dict[str, str], args: list[str], message: str
) -> None:
    for name, text in files.items():
        (template_dir / name).write_text(text)
    before = sorted(p.name for p in template_dir.iterdir())
    result = CliRunner().invoke(app, ["render", "echo.service.j2", *args, "-o", "out.service"])
    assert result.exit_code == 1, result.output
    assert message in one_error_line(result)
    assert sorted(p.name for p in template_dir.iterdir()) == before


def test_render_missing_template(template_dir: Path) -> None:
    result = CliRunner().invoke(app, ["render", "nope.j2"])
    assert result.exit_code == 1
    assert "nope.j2" in one_error_line(result)


def test_render_keeps_an_existing_file_on_error(template_dir: Path) -> None:
    (template_dir / "out.service").write_text("old\n")
    result = CliRunner().invoke(app, ["render", "echo.service.j2", "-o", "out.service"])
    assert result.exit_code == 1
    assert (template_dir / "out.service").read_text() == "old\n"


def test_keyboard_interrupt_exits_130_quietly(
    run: Run, units_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fleetpy.client import plans

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(plans, "plan_submit", interrupted)
    result = run("submit", write(units_dir, "a.service"))
    assert result.exit_code == 130
    assert "Traceback" not in result.output + result.stderr


# ----------------------------------------------------------------------------- fleetctl habits


def test_global_options_also_after_the_verb(
    etcd: EtcdServer,
    prefix: str,
    registry: Registry,
    units_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As fleetctl's: the same options, meaning the same, before or after the verb."""
    runner = CliRunner()
    where = ["--endpoint", etcd.endpoint, "--etcd-prefix", prefix]
    result = runner.invoke(app, ["submit", *where, write(units_dir, "web.service")])
    assert result.exit_code == 0, result.output
    assert list(registry.list_units()) == ["web.service"]
    listed = runner.invoke(app, ["list-unit-files", "--no-legend", *where])
    assert listed.exit_code == 0 and listed.stdout.split()[0] == "web.service"
    # After the verb is later on the line: it wins over the same option before it.
    nowhere = ["--endpoint", "http://127.0.0.1:1", "--request-timeout", "1"]
    result = runner.invoke(app, [*nowhere, "list-unit-files", "--no-legend", *where])
    assert result.exit_code == 0 and result.stdout == listed.stdout, result.output
    result = runner.invoke(app, [*where, "list-unit-files", *nowhere])
    assert result.exit_code == 1 and "127.0.0.1:1" in one_error_line(result)
    # The environment still fills in what the command line does not say.
    monkeypatch.setenv("FLEETPY_ENDPOINT", etcd.endpoint)
    result = runner.invoke(app, ["list-unit-files", "--no-legend", "--etcd-prefix", prefix])
    assert result.exit_code == 0 and result.stdout == listed.stdout, result.output
    # A verb of a group (keys list), and a setting of another scope (sign).
    keys = str(tmp_path / "keys")
    assert runner.invoke(app, ["keys", "generate", "ops", "--keys-dir", keys]).exit_code == 0
    result = runner.invoke(app, ["keys", "list", "--no-legend", "--keys-dir", keys])
    assert result.exit_code == 0 and result.stdout.split()[0] == "ops", result.output


def test_ssh_options_after_the_machine_are_the_remote_commands(
    run: Run, cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argvs: list[list[str]] = []
    monkeypatch.setattr("fleetpy.ssh.os.execvp", lambda _file, argv: argvs.append(argv))
    result = run("ssh", "--ssh-port", "2222", "11111111", "ls", "--ssh-port", "0", "-la")
    assert result.exit_code == 0, result.output
    argv = argvs[-1]
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("--") + 1 :] == ["ls", "--ssh-port", "0", "-la"]


@pytest.mark.parametrize(
    "env, args, strict",
    [
        (None, [], True),
        (None, ["--strict-host-key-checking=false"], False),
        (None, ["--strict-host-key-checking=no"], False),
        ("false", [], False),
        ("false", ["--strict-host-key-checking"], True),  # bare: true, over the env
        ("true", ["--strict-host-key-checking", "false"], False),  # fleetpy's older spelling
        ("false", ["--strict-host-key-checking=true"], True),
    ],
)
def test_strict_host_key_checking_is_a_switch(
    run: Run,
    cluster: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    env: str | None,
    args: list[str],
    strict: bool,
) -> None:
    """As fleetctl's boolean flag, before or after the verb; the env var still applies."""
    if env is not None:
        monkeypatch.setenv("FLEETPY_STRICT_HOST_KEY_CHECKING", env)
    argvs: list[list[str]] = []
    monkeypatch.setattr("fleetpy.ssh.os.execvp", lambda _file, argv: argvs.append(argv))
    expected = f"StrictHostKeyChecking={'yes' if strict else 'no'}"
    for argv in ([*args, "ssh", "11111111"], ["ssh", *args, "11111111"]):
        result = run(*argv)
        assert result.exit_code == 0, result.output
        assert expected in argvs[-1], (argv, argvs[-1])
