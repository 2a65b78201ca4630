"""A deployment: a directory of Jinja unit templates and one `fleetpy.yaml` saying
what to render from them. Rendering is all-or-nothing and bounded (one sandboxed child
process for the whole directory); every rendered unit is validated as a submit would.

fleetpy.yaml:

    name: web-stack            # the deployment, owner of every unit it creates
    values:                    # shared by all templates
      image: local/busybox:latest
    units:
      - name: web@.service     # a template: `instances` says which instances to run
        template: web.service.j2
        instances: 3           # web@1..3 (or a list of instance names)
        values: {port: 8080}   # this unit's values, over the shared ones
        instance_values:       # per instance, over both
          "3": {port: 8081}
      - name: monitor.service  # a plain unit
        template: monitor.service.j2
    rollout:
      max_unavailable: 1       # units replaced at once in a rolling update
      min_ready: 5             # seconds a new version must stay active before the next
      timeout: 120             # seconds a new version may take to become active

Each instance is rendered on its own (values may differ per instance) and submitted
under its own name, `web@2.service`; `%i` and friends still expand as systemd does.
Templates also see `deployment` (its name), `unit` (the unit's name) and `instance`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..client.arguments import MAX_UNITS_PER_COMMAND
from ..errors import DeploymentError, FileError, FleetpyError
from ..files import MAX_UNIT_FILE_BYTES, MAX_VALUES_BYTES, display_path, over_limit, read_text_file
from ..unitfile.container import expand_unit
from ..unitfile.template import RenderJob, merge_values, render_all_bounded
from ..unitfile.unit import FleetOptions, fleet_options, parse_name, parse_unit
from ..yamlload import load_yaml_mapping

DEPLOYMENT_FILE = "fleetpy.yaml"
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_BUILTINS = ("deployment", "unit", "instance")


@dataclass(frozen=True)
class Rollout:
    max_unavailable: int = 1
    min_ready: float = 5.0
    timeout: float = 120.0


@dataclass(frozen=True)
class UnitSource:
    """One `units:` entry: a unit (or a template's instances) and how to render it."""

    name: str
    template: str  # relative to the deployment directory
    instances: tuple[str, ...] = ()
    values: Mapping[str, Any] = field(default_factory=dict)
    instance_values: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Deployment:
    name: str
    directory: Path
    values: Mapping[str, Any]
    units: tuple[UnitSource, ...]
    rollout: Rollout


@dataclass(frozen=True)
class RenderedUnit:
    """A unit as the deployment wants it: canonical text, its hash, where it came from."""

    name: str
    text: str
    hash: str
    source: str  # e.g. "web.service.j2 (instance 2)"
    options: FleetOptions

    @property
    def is_global(self) -> bool:
        return self.options.is_global


def _fail(where: str, message: str) -> DeploymentError:
    return DeploymentError(f"{where}: {message}")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _fail(where, "expected a mapping of names to values")
    return value


def _number(value: Any, where: str, low: float, high: float, integer: bool = False) -> float:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "a whole number" if integer else "a number"
        raise _fail(where, f"expected {kind} from {low:g} to {high:g}, not {value!r}")
    return value


def _instances(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, bool):
        raise _fail(where, "expected a count or a list of instance names")
    if isinstance(value, int):
        if not 1 <= value <= MAX_UNITS_PER_COMMAND:
            raise _fail(where, f"expected 1 to {MAX_UNITS_PER_COMMAND} instances, not {value}")
        return tuple(str(i) for i in range(1, value + 1))
    if isinstance(value, list) and value and all(isinstance(i, (str, int)) for i in value):
        names = tuple(str(i) for i in value)
        if len(set(names)) != len(names):
            raise _fail(where, "instance names repeat")
        return names
    raise _fail(where, "expected a count or a list of instance names")


def load_deployment(directory: str | os.PathLike[str]) -> Deployment:
    """Read and check DIRECTORY/fleetpy.yaml (templates are read when rendering)."""
    root = Path(directory)
    path = root / DEPLOYMENT_FILE
    shown = display_path(path)
    try:
        text = read_text_file(path, limit=MAX_VALUES_BYTES, what="deployment file")
    except FileError as exc:
        raise DeploymentError(str(exc)) from None
    data = load_yaml_mapping(text, shown, error=DeploymentError)
    unknown = sorted(set(data) - {"name", "values", "units", "rollout"})
    if unknown:
        raise _fail(shown, f"unknown key {unknown[0]!r} (known: name, values, units, rollout)")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _fail(
            shown,
            "name: expected a deployment name of lowercase letters, digits "
            "and _.- (at most 64), such as web-stack",
        )
    units_data = data.get("units")
    if not isinstance(units_data, list) or not units_data:
        raise _fail(shown, "units: expected a list of units to render")
    units = tuple(
        _unit_source(entry, f"{shown}: units[{i}]", root) for i, entry in enumerate(units_data)
    )
    seen: set[str] = set()
    for source in units:
        if source.name in seen:
            raise _fail(shown, f"unit {source.name} is listed twice")
        seen.add(source.name)
    rollout_data = _mapping(data.get("rollout"), f"{shown}: rollout")
    unknown = sorted(set(rollout_data) - {"max_unavailable", "min_ready", "timeout"})
    if unknown:
        raise _fail(f"{shown}: rollout", f"unknown key {unknown[0]!r}")
    defaults = Rollout()
    rollout = Rollout(
        max_unavailable=int(
            _number(
                rollout_data.get("max_unavailable", defaults.max_unavailable),
                f"{shown}: rollout.max_unavailable",
                1,
                10_000,
                True,
            )
        ),
        min_ready=float(
            _number(
                rollout_data.get("min_ready", defaults.min_ready),
                f"{shown}: rollout.min_ready",
                0,
                3600,
            )
        ),
        timeout=float(
            _number(
                rollout_data.get("timeout", defaults.timeout), f"{shown}: rollout.timeout", 1, 86400
            )
        ),
    )
    return Deployment(name, root, _mapping(data.get("values"), f"{shown}: values"), units, rollout)


def _unit_source(entry: Any, where: str, root: Path) -> UnitSource:
    data = _mapping(entry, where)
    unknown = sorted(set(data) - {"name", "template", "instances", "values", "instance_values"})
    if unknown:
        raise _fail(
            where,
            f"unknown key {unknown[0]!r} (known: name, template, instances, "
            "values, instance_values)",
        )
    name = data.get("name")
    if not isinstance(name, str):
        raise _fail(where, "name: expected a unit name such as web@.service")
    try:
        parsed = parse_name(name)
    except FleetpyError as exc:
        raise _fail(where, str(exc)) from None
    template = data.get("template")
    if not isinstance(template, str) or not template:
        raise _fail(where, "template: expected the path of a template in this directory")
    relative = Path(template)
    if relative.is_absolute() or ".." in relative.parts:
        raise _fail(where, f"template {template!r} must be inside the deployment directory")
    instances: tuple[str, ...] = ()
    if parsed.is_template:
        if "instances" not in data:
            raise _fail(
                where,
                f"{name} is a template: say which instances to run "
                "(instances: 3, or a list of names)",
            )
        instances = _instances(data["instances"], f"{where}.instances")
        for instance in instances:
            try:
                parse_name(name.replace("@.", f"@{instance}.", 1))
            except FleetpyError as exc:
                raise _fail(f"{where}.instances", str(exc)) from None
    elif "instances" in data:
        raise _fail(where, f"{name} is not a template (name@.service): it has no instances")
    per_instance = _mapping(data.get("instance_values"), f"{where}.instance_values")
    for instance, values in per_instance.items():
        if instance not in instances:
            raise _fail(f"{where}.instance_values", f"{instance!r} is not one of its instances")
        _mapping(values, f"{where}.instance_values.{instance}")
    return UnitSource(
        name,
        template,
        instances,
        _mapping(data.get("values"), f"{where}.values"),
        {str(k): _mapping(v, where) for k, v in per_instance.items()},
    )


def _merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge_values(merged, layer)
    return merged


def render_deployment(deployment: Deployment) -> tuple[RenderedUnit, ...]:
    """Every unit the deployment wants, rendered and validated; all or nothing."""
    jobs: list[RenderJob] = []
    names: list[tuple[str, str]] = []  # (unit name, what to call it in messages)
    for source in deployment.units:
        template = str(deployment.directory / source.template)
        for instance in source.instances or ("",):
            unit = source.name.replace("@.", f"@{instance}.", 1) if instance else source.name
            values = _merge(
                deployment.values,
                source.values,
                source.instance_values.get(instance, {}),
                {"deployment": deployment.name, "unit": unit, "instance": instance},
            )
            label = source.template + (f" (instance {instance})" if instance else "")
            jobs.append(RenderJob(template, values, source_name=template))
            names.append((unit, label))
    if len(jobs) > MAX_UNITS_PER_COMMAND:
        raise DeploymentError(
            f"{deployment.name} renders {len(jobs)} units; fleetpy takes at "
            f"most {MAX_UNITS_PER_COMMAND}"
        )
    texts = render_all_bounded(jobs)
    rendered = []
    for (unit, label), text in zip(names, texts):
        excess = over_limit(text, limit=MAX_UNIT_FILE_BYTES, what="unit file")
        if excess is not None:
            # As for a submitted file: etcd would refuse a few such units in one
            # transaction (its requests are at most 1.5 MiB), half-way through an apply.
            raise DeploymentError(f"{label} renders {unit} of {excess}")
        try:
            parsed = expand_unit(parse_unit(text, source=f"{label} -> {unit}"), unit)
            options = fleet_options(parsed, unit)
        except FleetpyError as exc:
            raise DeploymentError(f"{label} renders an invalid {unit}: {exc}") from None
        rendered.append(RenderedUnit(unit, parsed.serialize(), parsed.hash, label, options))
    return tuple(rendered)


def digest(units: Sequence[RenderedUnit]) -> str:
    """What a set of rendered units is, when no git commit says it: sha256 of names and hashes."""
    hasher = hashlib.sha256()
    for unit in sorted(units, key=lambda u: u.name):
        hasher.update(f"{unit.name}\0{unit.hash}\n".encode())
    return "sha256:" + hasher.hexdigest()[:16]


__all__ = [
    "DEPLOYMENT_FILE",
    "Deployment",
    "RenderedUnit",
    "Rollout",
    "UnitSource",
    "digest",
    "load_deployment",
    "render_deployment",
]
