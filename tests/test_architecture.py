"""The structure stays as designed: no import cycles, the core without the CLI's or the
cluster harness's libraries, and the etcd key layout known only to the registry."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fleetpy"
CORE = ("fleetpy.registry", "fleetpy.scheduler", "fleetpy.engine", "fleetpy.agent")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """fleetpy modules imported anywhere in the file (lazy imports in functions too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("fleetpy"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("fleetpy"):
                continue
            found.add(target)
            for alias in node.names:  # `from . import config` names a module
                if (
                    (PACKAGE.parent / (target + "." + alias.name).replace(".", "/"))
                    .with_suffix(".py")
                    .exists()
                ):
                    found.add(f"{target}.{alias.name}")
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {i for i in imports_of(path) if i in modules} for name, path in modules.items()}


def test_no_import_cycles() -> None:
    edges = graph()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for target in sorted(edges[node]):
            visit(target, [*path, node])
        done.add(node)

    for node in sorted(edges):
        visit(node, [])


def test_core_pulls_in_neither_the_cli_libraries_nor_the_cluster_harness() -> None:
    code = (
        "import sys; import " + ", ".join(CORE) + "; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'rich') "
        "or m.startswith('fleetpy.cluster')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    )
    assert result.stdout.strip() == "[]"


def test_the_key_layout_lives_only_in_the_registry() -> None:
    key = re.compile(r"""["'](unit|schedule|state|machines|content|reason|global|engine)/""")
    for path in PACKAGE.rglob("*.py"):
        if "registry" in path.relative_to(PACKAGE).parts:
            continue
        text = path.read_text()
        assert not key.search(text), f"{path}: a key of the etcd layout"
        assert not re.search(r"\._txn\(|\._etcd\b", text), f"{path}: the registry's insides"
