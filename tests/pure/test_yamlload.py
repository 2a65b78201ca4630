"""Bounded YAML: merge keys, duplicate keys, depth and alias limits, one-line errors."""

from __future__ import annotations

import re
from typing import Any

import pytest

from fleetpy.errors import ConfigError, FleetpyError, TemplateError
from fleetpy.yamlload import MAX_DEPTH, MAX_NODES, load_yaml, load_yaml_mapping


def load(text: str) -> Any:
    return load_yaml(text, "v.yaml", error=TemplateError)


def error(text: str) -> str:
    with pytest.raises(TemplateError) as info:
        load(text)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_plain_documents() -> None:
    assert load("a: 1\nb: [x, 'y']\nc: {d: true}\n") == {"a": 1, "b": ["x", "y"], "c": {"d": True}}
    assert load("") is None
    assert load("# only a comment\n") is None
    assert load("- 1\n- 2\n") == [1, 2]


# ----------------------------------------------------------------------------- merge keys


def test_merge_key_with_an_override() -> None:
    text = "base: &base {image: nginx, restart: always}\nweb:\n  <<: *base\n  restart: no\n"
    assert load(text)["web"] == {"image": "nginx", "restart": False}


def test_merge_key_list_earlier_sources_win_and_explicit_keys_win_over_all() -> None:
    text = "a: &a {x: 1, y: 1}\nb: &b {x: 2, z: 2}\nc:\n  <<: [*a, *b]\n  y: 3\n"
    assert load(text)["c"] == {"x": 1, "y": 3, "z": 2}


def test_merge_key_list_with_longer_keys() -> None:
    # PyYAML's own merge dedups by string identity: check real strings, not cached ones.
    text = (
        "a: &a {image: one, port: 1}\n"
        "b: &b {image: two, user: bob}\n"
        "c:\n  <<: [*a, *b]\n  port: 3\n"
    )
    assert load(text)["c"] == {"image": "one", "port": 3, "user": "bob"}


def test_merge_keys_nest() -> None:
    text = "m: &m {x: 0, k: m}\nbase: &base\n  <<: *m\n  x: 1\nweb:\n  <<: *base\n  y: 2\n"
    assert load(text)["web"] == {"x": 1, "k": "m", "y": 2}
    # An override of a merged key inside a merged mapping is not a duplicate either.
    assert load("m: &m {x: 0}\nbase: &base {<<: *m, x: 1}\n<<: *base\n")["x"] == 1


def test_merge_key_errors() -> None:
    assert re.fullmatch(
        r"v\.yaml:1: expected a mapping or list of mappings for merging, "
        r"but found scalar",
        error("<<: 1\n"),
    )
    assert re.fullmatch(
        r"v\.yaml:2: expected a mapping for merging, but found scalar",
        error("a: &a {x: 1}\nb: {<<: [*a, 2]}\n"),
    )
    assert error("a: &a {x: 1}\nb:\n  <<: *a\n  y: 1\n  y: 2\n") == "v.yaml:5: duplicate key 'y'"


# ----------------------------------------------------------------------------- duplicates


@pytest.mark.parametrize(
    "text, line",
    [
        ("name: a\nimage: b\nname: c\n", 3),
        ("a:\n  b: 1\n  b: 2\n", 3),
        ("- {x: 1, x: 2}\n", 1),
        ("1: a\n0x1: b\n", 2),  # the same key once constructed
    ],
)
def test_duplicate_keys(text: str, line: int) -> None:
    assert re.fullmatch(rf"v\.yaml:{line}: duplicate key .+", error(text))


# ----------------------------------------------------------------------------- limits


def test_depth_limit() -> None:
    assert load("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n") is not None
    assert error("a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n") == (
        f"v.yaml:1: nested deeper than {MAX_DEPTH} levels"
    )
    assert error("[" * 100_000) == f"v.yaml:1: nested deeper than {MAX_DEPTH} levels"
    assert error("{a: " * 100_000) == f"v.yaml:1: nested deeper than {MAX_DEPTH} levels"
    block = "".join(" " * i + "k:\n" for i in range(200))
    assert error(block) == f"v.yaml:{MAX_DEPTH + 1}: nested deeper than {MAX_DEPTH} levels"


BILLION_LAUGHS = (
    "\n".join(
        ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        + [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    )
    + "\n"
)


def test_alias_bombs() -> None:
    assert re.fullmatch(
        r"v\.yaml:\d: more than 100000 values once aliases are expanded "
        r"\(an alias bomb\?\)",
        error(BILLION_LAUGHS),
    )
    merge_bomb = "a0: &a0 {k: v}\n" + "".join(
        f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * 10)}], k{i}: v}}\n" for i in range(1, 10)
    )
    assert "an alias bomb" in error(merge_bomb)


def test_node_limit_without_aliases_does_not_blame_aliases() -> None:
    text = "".join(f"k{i}: {i}\n" for i in range(60_000))
    assert error(text) == "v.yaml:50000: more than 100000 values (keys count too), fleetpy's limit"


def test_node_limit_counts_expanded_aliases() -> None:
    text = "a: &a [" + ", ".join(["x"] * 99) + "]\nb: [" + ", ".join(["*a"] * 999) + "]\n"
    assert "alias bomb" in load_error_with(text, max_nodes=99_999)
    assert load_yaml(text, "v.yaml", error=TemplateError, max_nodes=200_000)["b"][0][0] == "x"
    assert MAX_NODES == 100_000


def load_error_with(text: str, **limits: int) -> str:
    with pytest.raises(TemplateError) as info:
        load_yaml(text, "v.yaml", error=TemplateError, **limits)
    return str(info.value)


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a {<<: *a}\n"])
def test_recursive_aliases_are_refused(text: str) -> None:
    assert re.fullmatch(r"v\.yaml:1: alias \*a refers to a node that contains it .*", error(text))


# ----------------------------------------------------------------------------- one-line errors


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a: !!int abc\n", r"v\.yaml:1: invalid !!int 'abc': invalid literal .*"),
        ("a: 1\nb: !!float x\n", r"v\.yaml:2: invalid !!float 'x': could not convert .*"),
        (
            "a: !!python/object:os.system x\n",
            r"v\.yaml:1: could not determine a constructor for the tag "
            r"'tag:yaml.org,2002:python/object:os.system'",
        ),
        ("a: !!python/name:os.system\n", r"v\.yaml:1: could not determine a constructor .*"),
        (
            "a: 2024-13-45\n",
            r"v\.yaml:1: invalid !!timestamp '2024-13-45': month must be in 1\.\.12",
        ),
        ("a: !!binary zzz\n", r"v\.yaml:1: failed to decode base64 data: .*"),
        (
            "a: 1" + "0" * 5000 + "\n",
            r"v\.yaml:1: invalid !!int '10+\.\.\.': more than 4300 digits",
        ),
        ("a:\n\tb: 1\n", r"v\.yaml:2: found character '\\t' that cannot start any token"),
        ('a: "open\n', r"v\.yaml:2: found unexpected end of stream"),
        ("a: [1,\n", r"v\.yaml:2: .*"),
        ("a: b: c\n", r"v\.yaml:1: mapping values are not allowed here"),
        (
            "a: 1\x00\n",
            r"v\.yaml:1: unacceptable character #x0000: special characters are not allowed",
        ),
        ("ok: 1\nb: \x1b[31m\n", r"v\.yaml:2: unacceptable character #x001b: .*"),
        ("a: *nope\n", r"v\.yaml:1: found undefined alias 'nope'"),
        ("a: &x 1\nb: &x 2\n", r"v\.yaml:2: found duplicate anchor 'x' \(first on line 1\)"),
        (
            "a: 1\n---\nb: 2\n",
            r"v\.yaml:2: expected a single document in the stream, but found another document",
        ),
        ("? [a]\n: 1\n", r"v\.yaml:1: found unhashable key"),
        ("a: !!map [1]\n", r"v\.yaml:1: expected a mapping node, but found sequence"),
        ("a: !!set [1]\n", r"v\.yaml:1: expected a mapping node, but found sequence"),
    ],
)
def test_errors_are_one_line_with_the_line(text: str, expected: str) -> None:
    message = error(text)
    assert re.fullmatch(expected, message), message
    assert message.isprintable()


def test_error_type_is_the_callers() -> None:
    with pytest.raises(ConfigError, match=r"^agent\.yaml:1: invalid !!int"):
        load_yaml("a: !!int x\n", "agent.yaml", error=ConfigError)
    with pytest.raises(FleetpyError, match=r"^agent\.yaml:1: nested deeper"):
        load_yaml("[" * 1000, "agent.yaml", error=ConfigError)


# ----------------------------------------------------------------------------- mappings


def test_load_yaml_mapping() -> None:
    assert load_yaml_mapping("", "v.yaml", error=TemplateError) == {}
    assert load_yaml_mapping("~\n", "v.yaml", error=TemplateError) == {}
    assert load_yaml_mapping("a: 1\n", "v.yaml", error=TemplateError) == {"a": 1}
    with pytest.raises(
        TemplateError,
        match=r"^v\.yaml:3: the top level must be a mapping of names "
        r"to values, not list$",
    ):
        load_yaml_mapping("# list\n\n- a\n", "v.yaml", error=TemplateError)
    with pytest.raises(TemplateError, match=r"^v\.yaml:1: .* not str$"):
        load_yaml_mapping("just text\n", "v.yaml", error=TemplateError)
    with pytest.raises(TemplateError, match=r"^v\.yaml:2: top-level key 2 is not a string$"):
        load_yaml_mapping("a: 1\n2: b\n", "v.yaml", error=TemplateError)
    with pytest.raises(TemplateError, match=r"^v\.yaml:1: top-level key None is not a string$"):
        load_yaml_mapping("~: b\n", "v.yaml", error=TemplateError)
