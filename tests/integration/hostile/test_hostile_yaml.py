"""Class 8: YAML values files.

Merge keys (`<<: *base`), which users write, were refused; `!!int abc`, deep nesting and alias
bombs gave tracebacks or hung. Merge keys are accepted; alias expansion and depth are bounded;
every YAML error is one line naming the file and the line.
"""

from __future__ import annotations

import time

import pytest

from support.hostile_harness import Hostile

TEMPLATE = "[Service]\nEnvironment=A={{ a }} B={{ b }}\n"

LAUGHS = "".join(
    ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n']
    + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10)]
)
MERGE_BOMB = "m0: &m0 {k: v}\n" + "".join(
    f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 10)}], k{i}: v}}\n" for i in range(1, 12)
)

# (name, file content, line, what the message must contain)
BAD_YAML = [
    ("int-tag", "a: 1\nb: !!int abc\n", 2, "invalid !!int 'abc'"),
    ("float-tag", "a: !!float x\nb: 2\n", 1, "invalid !!float 'x'"),
    ("bool-tag", "a: !!bool maybe\nb: 2\n", 1, "invalid !!bool 'maybe'"),
    (
        "timestamp",
        "a: 1\nb: 2\nwhen: 2024-02-30\n",
        3,
        "invalid !!timestamp '2024-02-30': day is out of range",
    ),
    ("binary-tag", "a: !!binary '%%%'\nb: !!binary abc\n", 2, "failed to decode base64 data"),
    (
        "python-object",
        "a: !!python/object/apply:os.system ['id']\nb: 1\n",
        1,
        "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
    ("python-name", "a: 1\nb: !!python/name:os.system\n", 2, "could not determine a constructor"),
    ("python-module", "a: !!python/module:os\nb: 1\n", 1, "could not determine a constructor"),
    ("local-tag", "a: !evil x\nb: 1\n", 1, "could not determine a constructor for the tag '!evil'"),
    ("deep-flow", "a: 1\nb: " + "[" * 100_000 + "\n", 2, "nested deeper than 64 levels"),
    (
        "deep-flow-closed",
        "a: " + "[" * 1000 + "]" * 1000 + "\nb: 1\n",
        1,
        "nested deeper than 64 levels",
    ),
    ("deep-mapping", "a: " + "{x: " * 100_000 + "\n", 1, "nested deeper than 64 levels"),
    (
        "deep-block",
        "a: 1\n" + "".join(" " * i + "k:\n" for i in range(100)),
        66,
        "nested deeper than 64 levels",
    ),
    (
        "billion-laughs",
        LAUGHS,
        5,
        "more than 100000 values once aliases are expanded (an alias bomb?)",
    ),
    ("merge-bomb", MERGE_BOMB, 6, "an alias bomb"),
    ("recursive-alias", "a: &a [1, *a]\nb: 1\n", 1, "alias *a refers to a node that contains it"),
    (
        "recursive-merge",
        "a: &a\n  x: 1\n  <<: *a\nb: 1\n",
        3,
        "alias *a refers to a node that contains it",
    ),
    ("undefined-alias", "a: 1\nb: *nope\n", 2, "found undefined alias 'nope'"),
    ("duplicate-anchor", "a: &x 1\nb: &x 2\n", 2, "found duplicate anchor 'x' (first on line 1)"),
    ("duplicate-key", "a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a'"),
    ("duplicate-nested-key", "a: 1\nb:\n  c: 1\n  c: 2\n", 4, "duplicate key 'c'"),
    (
        "duplicate-after-merge",
        "base: &base {a: 1}\nm:\n  <<: *base\n  b: 1\n  b: 2\na: 1\nb: 2\n",
        5,
        "duplicate key 'b'",
    ),
    (
        "bad-merge-value",
        "a: 1\nb: 2\n<<: 3\n",
        3,
        "expected a mapping or list of mappings for merging",
    ),
    ("bad-merge-list", "x: &x {a: 1}\n<<: [*x, 3]\nb: 2\n", 2, "expected a mapping for merging"),
    ("tab-indent", "a: 1\nb:\n\tc: 2\n", 3, "found character '\\t' that cannot start any token"),
    ("unterminated-double", 'a: "open\nb: 2\n', 3, "found unexpected end of stream"),
    ("unterminated-single", "a: 1\nb: 'open\n", 3, "found unexpected end of stream"),
    ("unclosed-flow", "a: [1, 2\nb: 2\n", 2, "expected ',' or ']', but got ':'"),
    ("mapping-in-scalar", "a: b: c\n", 1, "mapping values are not allowed here"),
    ("bad-indent", "a:\n  b: 1\n c: 2\nb: 1\n", 3, ""),
    (
        "two-documents",
        "a: 1\nb: 2\n---\nc: 3\n",
        3,
        "expected a single document in the stream, but found another document",
    ),
    ("nul-byte", "a: 1\nb: x\x00y\n", 2, "unacceptable character #x0000"),
    ("escape-sequence", "a: 1\nb: \x1b[31mred\n", 2, "unacceptable character #x001b"),
    ("c1-control", "a: 1\n\nb: \x9b31m\n", 3, "unacceptable character #x009b"),
    ("binary-junk", "a: 1\n" + "\x01\x02\x03\x7f" * 10 + "\n", 2, "unacceptable character #x0001"),
    (
        "top-level-list",
        "# values\n- a\n- b\n",
        2,
        "the top level must be a mapping of names to values, not list",
    ),
    (
        "top-level-string",
        "\n\njust a string\n",
        3,
        "the top level must be a mapping of names to values, not str",
    ),
    ("top-level-int", "42\n", 1, "not int"),
    ("int-key", "a: 1\nb: 2\n3: c\n", 3, "top-level key 3 is not a string"),
    ("null-key", "a: 1\n~: c\nb: 1\n", 2, "top-level key None is not a string"),
    ("list-key", "a: 1\nb: 2\n? [x]\n: 1\n", 3, "found unhashable key"),
    ("huge-int", "a: 1\nb: 1" + "0" * 10_000 + "\n", 2, "more than 4300 digits"),
    ("directive", "%YAML 2.0\n---\na: 1\n", 1, "found incompatible YAML document"),
]


@pytest.mark.parametrize("name, text, line, message", BAD_YAML, ids=[c[0] for c in BAD_YAML])
def test_bad_yaml_is_one_line_with_file_and_line(
    seeded: Hostile, name: str, text: str, line: int, message: str
) -> None:
    template = seeded.write("env.service.j2", TEMPLATE)
    values = seeded.write(f"yaml/{name}.yaml", text)
    started = time.monotonic()
    error = seeded.rejects("render", template, "--values", values, "-o", f"{name}.service")
    assert time.monotonic() - started < 10
    assert error.startswith(f"fleetpy: error: {values}:{line}: "), error
    assert message in error, error
    assert not (seeded.workdir / f"{name}.service").exists()


# ----------------------------------------------------------------------------- accepted


@pytest.mark.parametrize(
    "text, expected",
    [
        ("base: &base {a: one, b: two}\n<<: *base\n", "A=one B=two"),
        ("base: &base {a: one, b: two}\n<<: *base\nb: mine\n", "A=one B=mine"),
        ("x: &x {a: from-x}\ny: &y {a: from-y, b: from-y}\n<<: [*x, *y]\n", "A=from-x B=from-y"),
        ("x: &x {a: from-x}\ny: &y {a: from-y, b: from-y}\n<<: [*y, *x]\n", "A=from-y B=from-y"),
        (
            "x: &x {a: from-x}\ny: &y {a: from-y, b: from-y}\n<<: [*x, *y]\nb: own\n",
            "A=from-x B=own",
        ),
        ("m: &m {a: m, b: m}\nbase: &base\n  <<: *m\n  a: base\n<<: *base\n", "A=base B=m"),
        (
            "common: &common\n  a: 1\n  b: 2\nweb:\n  <<: *common\n  b: 3\na: x\nb: '{{ web.b }}'\n",
            "A=x B={{ web.b }}",
        ),
        ("a: &v value\nb: *v\n", "A=value B=value"),
        ("a: yes\nb: 0x1F\n", "A=True B=31"),
        ("a: 'x: y'\nb: \"tab\\there\"\n", "A=x: y B=tab\there"),  # a quoted tab is data
    ],
)
def test_merge_keys_and_aliases_are_accepted(seeded: Hostile, text: str, expected: str) -> None:
    template = seeded.write("env.service.j2", TEMPLATE)
    values = seeded.write("yaml/good.yaml", text)
    outcome = seeded.run("render", template, "--values", values)
    assert outcome.code == 0, outcome.describe()
    assert outcome.stdout == f"[Service]\nEnvironment={expected}\n", outcome.describe()


def test_merged_values_reach_nested_templates(seeded: Hostile) -> None:
    template = seeded.write(
        "web.service.j2",
        "[Service]\n{% for name, svc in services|dictsort %}"
        "X-{{ name }}={{ svc.image }}:{{ svc.port }}\n{% endfor %}",
    )
    values = seeded.write(
        "yaml/services.yaml",
        "defaults: &defaults {image: nginx, port: 80}\n"
        "services:\n"
        "  web: {<<: *defaults}\n"
        "  api: {<<: *defaults, port: 8080}\n"
        "  db: {<<: *defaults, image: postgres, port: 5432}\n",
    )
    assert seeded.ok("render", template, "--values", values).stdout == (
        "[Service]\nX-api=nginx:8080\nX-db=postgres:5432\nX-web=nginx:80\n"
    )
