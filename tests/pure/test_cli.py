"""test_cli.py's tests that need no etcd and no process (README "Tests"); what the module
covers as a whole: tests/integration/test_cli.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from typer._coercion import build_runtime_param, resolve_type_descriptor
from typer.models import ArgumentInfo, OptionInfo
from typer.testing import CliRunner

from fleetpy.cli import app
from fleetpy.cli.output import Output
from fleetpy.cli.wiring import _PlainValues
from fleetpy.config import Settings, UnitManagerKind

from support.cli_helpers import one_error_line

# No FLEETPY_* setting of the caller reaches these tests (support.cli_helpers).
pytestmark = pytest.mark.usefixtures("clean_env")


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == "fleetpy 0.1.0"


# ----------------------------------------------------------------------------- daemons


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Settings]:
    """Replace run_engine/run_agent with recorders of the settings they get."""
    import fleetpy.entrypoints

    seen: dict[str, Settings] = {}
    monkeypatch.setattr(
        fleetpy.entrypoints, "run_engine", lambda settings: seen.update(engine=settings)
    )
    monkeypatch.setattr(
        fleetpy.entrypoints, "run_agent", lambda settings: seen.update(agent=settings)
    )
    return seen


def test_engine_verb_resolves_settings(
    captured: dict[str, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETPY_RECONCILE_INTERVAL", "7")
    result = CliRunner().invoke(app, ["--endpoint", "http://e:1", "engine", "--lease-ttl", "3"])
    assert result.exit_code == 0, result.output
    settings = captured["engine"]
    assert settings.etcd.endpoints == ("http://e:1",) and settings.engine.lease_ttl == 3
    assert settings.engine.reconcile_interval == 7.0 and settings.etcd.prefix == "/fleetpy"


def test_agent_verb_merges_config_file(captured: dict[str, Settings], tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "endpoint: http://file:1\nmachine_id: m1\nttl: 20\n"
        "metadata: {role: web}\nunit_manager: simulated\n"
    )
    result = CliRunner().invoke(
        app, ["agent", "--config", str(path), "--ttl", "5", "--public-ip", "10.0.0.1"]
    )
    assert result.exit_code == 0, result.output
    settings = captured["agent"]
    assert settings.etcd.endpoints == ("http://file:1",) and settings.agent.machine_id == "m1"
    assert settings.agent.ttl == 5 and settings.agent.public_ip == "10.0.0.1"
    assert settings.agent.metadata == {"role": "web"}
    assert settings.agent.unit_manager is UnitManagerKind.SIMULATED


@pytest.mark.parametrize(
    "yaml_text, args, message",
    [
        ("ttl: 5\nmetadata: [\n", [], "agent.yaml:3"),
        ("colour: blue\n", [], "unknown setting 'colour'"),
        ("", ["--ttl", "-1"], "invalid --ttl value '-1'"),
        (
            "",
            ["--unit-manager", "docker"],
            "invalid --unit-manager value 'docker': expected systemd or simulated",
        ),
        ("", ["--metadata", "novalue"], "invalid metadata item 'novalue'"),
    ],
)
def test_agent_bad_settings(
    captured: dict[str, Settings], tmp_path: Path, yaml_text: str, args: list[str], message: str
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml_text)
    result = CliRunner().invoke(app, ["agent", "--config", str(path), *args])
    assert result.exit_code == 1
    assert message in one_error_line(result)
    assert "agent" not in captured


def test_malformed_endpoint_is_one_line(units_dir: Path) -> None:
    result = CliRunner().invoke(app, ["--endpoint", "http://[::1", "list-machines"])
    assert result.exit_code == 1
    assert one_error_line(result).startswith("fleetpy: error: invalid etcd endpoint")


def test_global_options_after_the_verb_reach_the_daemons(
    captured: dict[str, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETPY_ETCD_PREFIX", "/env")
    result = CliRunner().invoke(
        app, ["--endpoint", "http://before:1", "engine", "--endpoint", "http://after:1"]
    )
    assert result.exit_code == 0, result.output
    etcd = captured["engine"].etcd
    assert etcd.endpoints == ("http://after:1",) and etcd.prefix == "/env"


def test_a_verbs_own_option_wins_over_a_global_one() -> None:
    """A verb's own option of a global option's name is the verb's after the verb; the
    global one still goes before the verb. (No verb of fleetpy's has one today.)"""
    from fleetpy.cli import wiring

    seen: dict[str, object] = {}
    demo = typer.Typer(cls=wiring._Group, add_completion=False)
    demo.callback()(wiring._main)

    @demo.command()
    def own(ctx: typer.Context, endpoint: str = typer.Option("", "--endpoint")) -> None:
        seen.update(own=endpoint, etcd=dict(wiring.globals_of(ctx).etcd_cli))

    @demo.command()
    def other(ctx: typer.Context) -> None:
        seen.update(etcd=dict(wiring.globals_of(ctx).etcd_cli))

    runner = CliRunner()
    result = runner.invoke(demo, ["--endpoint", "http://g:1", "own", "--endpoint", "mine"])
    assert result.exit_code == 0, result.output
    assert seen["own"] == "mine"
    assert seen["etcd"]["endpoint"] == "http://g:1"  # type: ignore[index]
    help_text = runner.invoke(demo, ["own", "--help"]).stdout
    assert help_text.count("--endpoint") == 1  # only its own
    assert runner.invoke(demo, ["other", "--endpoint", "http://o:1"]).exit_code == 0
    assert seen["etcd"]["endpoint"] == "http://o:1"  # type: ignore[index]


def test_verb_help_lists_its_options_then_the_global_ones() -> None:
    result = CliRunner().invoke(app, ["list-units", "--help"])
    assert result.exit_code == 0
    own, _, global_ = result.stdout.partition("Global options (also before the verb):")
    assert "--fields" in own and "--endpoint" not in own
    assert "--fields" not in global_
    for option in ("--endpoint", "--etcd-prefix", "--tunnel", "--sign-key"):
        assert f"  {option} " in global_, option
    assert "--strict-host-key-checking [true|false]" in global_
    # The root's own help is as before: every global option, once.
    root = CliRunner().invoke(app, ["--help"]).stdout
    assert root.count("--endpoint ENDPOINT") == 1 and "Global options" not in root


def coerced(runtime: Any, descriptor: Any, value: object, nargs: int = 1) -> str:
    """What a typer runtime parameter makes of VALUE: the value, or typer's error message."""
    param = SimpleNamespace(type_descriptor=descriptor, multiple=False, nargs=nargs)
    try:
        return repr(("ok", runtime._coerce_value(value, param=param, ctx=None)))
    except typer.BadParameter as exc:
        return repr(("error", exc.message))  # repr: nan is nan, and 5 is not 5.0


@pytest.mark.parametrize(
    ("annotation", "value", "bounds"),
    [
        (str, "web.service", {}),
        (str, "ünïcode", {}),
        (str, "\udcff.service", {}),  # undecodable argv bytes: typer's (pydantic's) refusal
        (int, "10", {"min": 0}),
        (int, "-3", {"min": 0}),
        (int, 7, {"min": 1, "max": 7}),
        (int, "007", {}),
        (int, " 5", {}),
        (int, "1e3", {}),
        (float, "0.5", {"min": 0, "max": 3600}),
        (float, "5", {}),
        (float, 2, {"min": 1}),
        (float, "nan", {}),
        (bool, True, {}),
        (bool, "yes", {}),
    ],
)
def test_plain_option_values_coerce_as_typer_does(
    annotation: type, value: object, bounds: dict[str, Any]
) -> None:
    # The CLI coerces plain option values itself (no pydantic at start-up); each value must
    # come out as typer's own coercion makes it, or fail with typer's own message.
    info = OptionInfo(**bounds)
    descriptor = resolve_type_descriptor(annotation, info)
    assert coerced(_PlainValues(info, annotation), descriptor, value) == coerced(
        build_runtime_param(descriptor), descriptor, value
    )


def test_plain_enum_and_list_values_coerce_as_typer_does() -> None:
    cases: list[tuple[Any, Any, list[object], int]] = [
        (Output, OptionInfo(), ["json", "table", Output.json, "JSON", "yaml"], 1),
        (list[str], ArgumentInfo(), [("a.service", "b.service"), ["x"], ("\udcff",)], -1),
    ]
    for annotation, info, values, nargs in cases:
        descriptor = resolve_type_descriptor(annotation, info)
        for value in values:
            plain = coerced(_PlainValues(info, annotation), descriptor, value, nargs)
            assert plain == coerced(build_runtime_param(descriptor), descriptor, value, nargs)
