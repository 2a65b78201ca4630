"""The structure stays as designed: no import cycles, the core without the CLI's or the
cluster harness's libraries, and the etcd key layout known only to the registry.

Here: the tests that need no etcd and no process (README "Tests"); the others are in
tests/integration/test_architecture.py."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from fleetpy.states import ActiveState, LoadState, SubState

from support.paths import ROOT, TESTS

PACKAGE = ROOT / "fleetpy"


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


def absolute_imports(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of each absolute import in TREE, in functions too."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            yield node.lineno, (node.module or "").split(".")[0]


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


def test_the_key_layout_lives_only_in_the_registry() -> None:
    key = re.compile(
        r"""["'](unit|schedule|state|machines|metadata|content|reason|global|engine)/"""
    )
    for path in PACKAGE.rglob("*.py"):
        if "registry" in path.relative_to(PACKAGE).parts:
            continue
        text = path.read_text()
        assert not key.search(text), f"{path}: a key of the etcd layout"
        assert not re.search(r"\._txn\(|\._etcd\b", text), f"{path}: the registry's insides"


def test_the_model_imports_nothing_from_the_store() -> None:
    # fleetpy.model is the domain model (records, codecs, events, writes as data): what
    # the registry stores, usable without it. Nothing it imports, however indirectly,
    # may be the registry or etcd's client libraries (the integration tier imports it in a
    # fresh interpreter and looks at sys.modules too).
    edges = graph()
    reached: set[str] = set()
    todo = [name for name in edges if name == "fleetpy.model" or name.startswith("fleetpy.model.")]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(edges[name])
    assert sorted(m for m in reached if m.startswith("fleetpy.registry")) == []
    store = {"grpc", "pyetcd"}
    found = []
    for name in sorted(reached):
        path = PACKAGE.parent / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = PACKAGE.parent / name.replace(".", "/") / "__init__.py"
        tree = ast.parse(path.read_text())
        found += [f"{name}: {top}" for _, top in absolute_imports(tree) if top in store]
    assert found == []
    assert "fleetpy.model.records" in reached  # the walk saw the model


# --------------------------------------------------------------------------- data is never code
# Issue [7] item 5: nothing fleetpy reads (etcd records, unit files, templates' values,
# config files) is evaluated, unpickled, loaded with YAML's unsafe loaders or handed to a
# shell. tests/*/test_stored_data.py tests the paths data does take.

# Builtins that run code.
CODE_BUILTINS = {"eval", "exec", "compile", "__import__", "breakpoint"}


# Modules that turn bytes into objects by running code.
CODE_MODULES = {"pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle", "_pickle"}


# module.attribute that run a shell or build arbitrary objects.
UNSAFE_ATTRIBUTES = {
    ("os", "system"),
    ("os", "popen"),
    ("subprocess", "getoutput"),
    ("subprocess", "getstatusoutput"),
    ("yaml", "load"),
    ("yaml", "load_all"),
    ("yaml", "full_load"),
    ("yaml", "full_load_all"),
    ("yaml", "unsafe_load"),
    ("yaml", "unsafe_load_all"),
}


# PyYAML's loaders and constructors that build Python objects from tags.
UNSAFE_YAML_NAMES = {
    "Loader",
    "FullLoader",
    "UnsafeLoader",
    "CLoader",
    "CFullLoader",
    "CUnsafeLoader",
    "Constructor",
    "FullConstructor",
    "UnsafeConstructor",
}


# Where one of those is used anyway, and why that is safe.
ALLOWED = {
    ("fleetpy/unitfile/template.py", "pickle"): (
        "render_bounded sends a render request to the child process it starts itself, "
        "over that child's stdin: the parent pickles plain values it built (from the "
        "safe YAML loader and --set), the child unpickles only what its parent wrote. "
        "No pickle is ever read from etcd, a file or the network."
    ),
}


SUBPROCESS_CALLS = {
    ("subprocess", "run"),
    ("subprocess", "Popen"),
    ("subprocess", "call"),
    ("subprocess", "check_call"),
    ("subprocess", "check_output"),
    ("os", "execv"),
    ("os", "execvp"),
    ("os", "execve"),
    ("os", "execvpe"),
    ("os", "spawnv"),
    ("os", "spawnvp"),
    ("os", "posix_spawn"),
    ("os", "posix_spawnp"),
}


# Functions whose result is an argv list (typed list[str]; checked by mypy --strict).
ARGV_BUILDERS = {"ssh_argv", "_with_parent", "keeper_argv"}


Source = tuple[str, ast.Module]


def sources() -> list[Source]:
    root = PACKAGE.parent
    return [
        (str(path.relative_to(root)), ast.parse(path.read_text()))
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


def dotted(node: ast.AST | None) -> tuple[str, str] | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id, node.attr
    return None


def code_builtins(files: list[Source]) -> list[str]:
    return [
        f"{name}:{node.lineno}: {node.func.id}()"
        for name, tree in files
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in CODE_BUILTINS
    ]


def code_deserializers(files: list[Source]) -> list[str]:
    found = []
    for name, tree in files:
        found += [
            f"{name}:{line}: import {module}"
            for line, module in absolute_imports(tree)
            if module in CODE_MODULES and (name, module) not in ALLOWED
        ]
    return found


def shells_and_unsafe_yaml(files: list[Source]) -> list[str]:
    found = []
    for name, tree in files:
        for node in ast.walk(tree):
            pair = dotted(node)
            if pair in UNSAFE_ATTRIBUTES or (
                pair is not None and pair[0] == "yaml" and pair[1] in UNSAFE_YAML_NAMES
            ):
                assert isinstance(node, ast.Attribute)  # what dotted() names
                found.append(f"{name}:{node.lineno}: {pair[0]}.{pair[1]}")
            if isinstance(node, ast.ImportFrom) and node.module:
                top = node.module.split(".")[0]
                found += [
                    f"{name}:{node.lineno}: from {node.module} import {alias.name}"
                    for alias in node.names
                    if (top, alias.name) in UNSAFE_ATTRIBUTES | SUBPROCESS_CALLS
                    or (top == "yaml" and alias.name in UNSAFE_YAML_NAMES)
                ]
            if isinstance(node, ast.keyword) and node.arg == "shell":
                if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                    found.append(f"{name}:{node.value.lineno}: shell=")
            if isinstance(node, ast.Call):
                call = dotted(node.func)
                if call is None or call[0] != "yaml" or call[1] in ("safe_dump", "safe_load"):
                    continue
                # Any other yaml.<function>(...) parses with a loader: it must be the safe one.
                loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
                if call[1] not in ("dump", "safe_dump_all") and dotted(loader) != (
                    "yaml",
                    "SafeLoader",
                ):
                    found.append(f"{name}:{node.lineno}: yaml.{call[1]} without SafeLoader")
    return found


def _argv_ok(node: ast.expr, bindings: dict[str, list[ast.expr]], varargs: set[str]) -> bool:
    """An argv list: a list or tuple display, a comprehension, list + list, a call of
    a known argv builder, or a variable only ever bound to one of those."""
    if isinstance(node, (ast.List, ast.Tuple, ast.ListComp)):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _argv_ok(node.left, bindings, varargs) and _argv_ok(node.right, bindings, varargs)
    if isinstance(node, ast.IfExp):
        return _argv_ok(node.body, bindings, varargs) and _argv_ok(node.orelse, bindings, varargs)
    if isinstance(node, ast.Call):
        func = node.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        return called in ARGV_BUILDERS
    if isinstance(node, ast.Name):
        if node.id in varargs:
            return True
        values = bindings.get(node.id, [])
        return bool(values) and all(_argv_ok(v, {}, varargs) for v in values)
    return False


def commands_not_given_as_argv(files: list[Source]) -> tuple[list[str], int]:
    """(call sites whose command is not an argv list, number of call sites seen)."""
    found = []
    seen = 0
    for name, tree in files:
        calls = sum(
            1
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and dotted(node.func) in SUBPROCESS_CALLS
        )
        before = seen
        scopes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        owner: dict[int, ast.FunctionDef] = {}  # call -> its innermost function
        for scope in scopes:  # outer functions come first: inner ones overwrite
            owner.update((id(node), scope) for node in ast.walk(scope))
        for scope in scopes:
            bindings: dict[str, list[ast.expr]] = {}
            varargs = {scope.args.vararg.arg} if scope.args.vararg is not None else set()
            for node in ast.walk(scope):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            bindings.setdefault(target.id, []).append(node.value)
                elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
                    bindings.setdefault(node.target.id, []).append(node.value)
            for node in ast.walk(scope):
                pair = dotted(node.func) if isinstance(node, ast.Call) else None
                if pair not in SUBPROCESS_CALLS or owner[id(node)] is not scope:
                    continue
                assert isinstance(node, ast.Call) and pair is not None
                seen += 1
                args = [k.value for k in node.keywords if k.arg == "args"] or node.args
                # os.exec*/spawn*(file, argv) and posix_spawn(path, argv); the rest: argv first.
                index = 1 if pair[0] == "os" else 0
                argv = args[index] if len(args) > index else None
                if argv is None or not _argv_ok(argv, bindings, varargs):
                    found.append(f"{name}:{node.lineno}: {pair[0]}.{pair[1]}")
        if seen - before != calls:
            found.append(f"{name}: a command run outside a function (not checked)")
    return found, seen


def test_no_code_builtins() -> None:
    assert code_builtins(sources()) == []


def test_no_deserializers_that_run_code() -> None:
    assert code_deserializers(sources()) == []


def test_no_shell_and_only_the_safe_yaml_loader() -> None:
    assert shells_and_unsafe_yaml(sources()) == []


def test_every_subprocess_gets_an_argv_list() -> None:
    """A string command would be split by nobody (or, with shell=True, by a shell)."""
    found, seen = commands_not_given_as_argv(sources())
    assert found == []
    assert seen >= 20  # the scan finds the call sites it is meant to check


BAD = """
import os, pickle, subprocess, yaml
from yaml import FullLoader
from yaml.constructor import UnsafeConstructor
from subprocess import getoutput

def f(text, *words):
    eval(text)
    exec(text)
    os.system(text)
    os.popen(text)
    yaml.load(text)
    yaml.load(text, Loader=yaml.Loader)
    yaml.unsafe_load(text)
    yaml.parse(text)
    subprocess.run(text)
    subprocess.run("ls " + text)
    subprocess.Popen(["ls", text], shell=True)
    command = f"ls {text}"
    subprocess.check_output(command)
    os.execvp("sh", "sh -c " + text)
    subprocess.run(words)
    subprocess.run(["ls", *words])

subprocess.run("ls")
"""


def test_the_scans_find_what_they_look_for() -> None:
    bad = [("bad.py", ast.parse(BAD))]
    assert len(code_builtins(bad)) == 2
    assert code_deserializers(bad) == ["bad.py:2: import pickle"]
    assert code_deserializers([("fleetpy/unitfile/template.py", ast.parse("import pickle"))]) == []
    found = shells_and_unsafe_yaml(bad)
    for what in (
        "from yaml import FullLoader",
        "from yaml.constructor import UnsafeConstructor",
        "from subprocess import getoutput",
        "os.system",
        "os.popen",
        "yaml.load without SafeLoader",
        "yaml.Loader",
        "yaml.unsafe_load",
        "yaml.parse without SafeLoader",
        "shell=",
    ):
        assert any(what in line for line in found), (what, found)
    found, seen = commands_not_given_as_argv(bad)
    assert seen == 7
    assert [line.split(": ")[1] for line in found] == [
        "subprocess.run",
        "subprocess.run",
        "subprocess.check_output",
        "os.execvp",
        "a command run outside a function (not checked)",
    ], found


# --------------------------------------------------------------- systemd's states, named once
# Issue [13] item 4: what a machine reports (systemd's ActiveState, LoadState, SubState) is
# compared through fleetpy.states' enums, never as bare text: a mistyped "activ" or a
# DesiredState's "inactive" taken for an ActiveState's is then a name error or visible.

# Where systemd's states are text by right, and why.
STATE_TEXT_ALLOWED = {
    "fleetpy/states.py": "names them (the enums)",
    "fleetpy/systemd.py": "the D-Bus edge: systemd's own properties, read as text",
}


# What holds a reported state: UnitState's and ObservedUnit's fields, the API's JSON
# fields and systemd's D-Bus properties.
STATE_FIELDS = {
    "active",
    "load",
    "sub",
    "systemdActiveState",
    "systemdLoadState",
    "systemdSubState",
    "ActiveState",
    "LoadState",
    "SubState",
}
STATE_WORDS = frozenset(s.value for s in (*ActiveState, *LoadState, *SubState))


def _holds_state(node: ast.expr) -> bool:
    """x.active, active, row["systemdActiveState"], props.get("SubState"), str(...) of one."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "str":
        return len(node.args) == 1 and _holds_state(node.args[0])
    if isinstance(node, ast.Attribute):
        return node.attr in STATE_FIELDS
    if isinstance(node, ast.Name):
        return node.id in STATE_FIELDS
    key: ast.expr | None = None
    if isinstance(node, ast.Subscript):
        key = node.slice
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
        key = node.args[0] if node.func.attr == "get" else None
    return isinstance(key, ast.Constant) and key.value in STATE_FIELDS


def _state_text(node: ast.expr) -> bool:
    """ "active", or a tuple, list or set display with such a word."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_state_text(element) for element in node.elts)
    return isinstance(node, ast.Constant) and node.value in STATE_WORDS


def state_text_compared(files: list[Source]) -> list[str]:
    found = []
    for name, tree in files:
        if name in STATE_TEXT_ALLOWED:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(map(_holds_state, operands)) and any(map(_state_text, operands)):
                    found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_systemd_states_are_compared_through_their_enums() -> None:
    assert state_text_compared(sources()) == []


BAD_STATES = """
def f(state, unit, row, props, event, active):
    state.active == "failed"
    unit.load != "loaded"
    state.active in ("active", "reloading")
    row["systemdActiveState"] != "active"
    props.get("SubState") == "running"
    str(props.get("LoadState")) != "loaded"
    "inactive" == active
    state.active == ActiveState.FAILED
    event.step == "failed"
    state.desired == "inactive"
"""


def test_the_state_scan_finds_what_it_looks_for() -> None:
    found = state_text_compared([("fleetpy/bad.py", ast.parse(BAD_STATES))])
    assert [line.split(":")[1] for line in found] == ["3", "4", "5", "6", "7", "8", "9"], found
    assert state_text_compared([("fleetpy/systemd.py", ast.parse(BAD_STATES))]) == []


def test_no_test_imports_from_a_conftest() -> None:
    # No module under tests/ imports a conftest or a test module (test_*), in any form
    # (`from conftest import X`, `import test_e2e`, `from integration import test_cli`...).
    # tests/ and tests/hostile/ both had a conftest module: `from conftest import X` got
    # whichever pytest loaded last, which differs between a clean clone and a warm checkout
    # (CI failed on it once); and a test module imported by another runs its module-level
    # code twice and drags its fixtures along. Shared code lives in tests/support and is
    # imported as `support.X`: a bare `X` (a module of tests/ by its file name) is refused
    # too, inside functions as well (one stayed behind when the harnesses moved).
    local = {path.stem for path in TESTS.rglob("*.py")} - {"__init__", "support"}
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] in local or any(
                    p == "conftest" or p.startswith("test_") for p in parts
                ):
                    offenders.append(f"{path.relative_to(TESTS)}:{node.lineno}: {name}")
    assert offenders == []


def design_table_modules(readme: str) -> set[str]:
    """Module names in the first column of the README's Design table (module | concept)."""
    table = readme.split("\n| module | concept |\n", 1)[1].split("\n\n", 1)[0]
    named: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            named.update(re.findall(r"`([a-z0-9_.]+)`", line.split("|")[1]))
    return named


def test_readme_module_table_names_every_module() -> None:
    # The table is how a newcomer finds code: it drifted once (five modules missing).
    readme = (PACKAGE.parent / "README.md").read_text()
    named = design_table_modules(readme)
    modules = {
        module_name(path).removeprefix("fleetpy.")
        for path in PACKAGE.rglob("*.py")
        if path.name != "__main__.py" and path != PACKAGE / "__init__.py"
    }
    assert sorted(modules - named) == [], "modules missing from the README's Design table"
    assert sorted(named - modules) == [], "README's Design table names modules that do not exist"


# Modules over the ~800-line limit, each with why it stays one module. Both ways: a module
# that grows past it needs a reason here, and one back under it leaves the list.
LINE_LIMIT = 800
LONG_MODULES = {
    "registry/transport.py": "fleetpy's etcd v3 client: one failover, retry and no-quorum "
    "policy around every call; split, the policy would be split with it",
    "cluster/nspawn.py": "the host harness (tests, benchmarks, cluster up): rootfs, boot, "
    "power-off and containers of one host share its state",
    "scheduler.py": "the placement planner: one class whose methods share its indexes",
    "api/server.py": "the HTTP server: h11 framing, TLS, tokens and streams around one "
    "connection loop",
    "unitfile/unit.py": "the unit-file grammar and fleet's [X-Fleet] options over it",
}


def test_no_module_is_over_the_line_limit_without_a_stated_reason() -> None:
    long = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if len(path.read_text().splitlines()) > LINE_LIMIT
    }
    assert sorted(long) == sorted(LONG_MODULES)
