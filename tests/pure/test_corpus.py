"""The bad-input corpus as data: every file tests/corpus/<class>/<case>.yaml is one case,
run through the real `fleetpy` executable against a real etcd (tests/support/hostile_harness.py).

A case must end with its exit code, exactly one clean `fleetpy: error:` line on stderr
matching its `error` pattern (no traceback, no raw control characters), and etcd
unchanged byte for byte. A case with `code: 0` (a limit's largest accepted input, on a
command that writes nothing) must print no error line and its stdout must match `stdout`.

A case file (read with yaml.safe_load):

    about: what the case is and why it must be refused       (required)
    argv: [submit, big.service]                               (required)
    code: 1                                                   (default 1)
    error: "larger than 64 KiB"                               (regex, searched in the line)
    stdout: "..."                                             (regex, for code 0)
    env: {NAME: value}                                        (added to the CLI's environment)
    files: {relative/path: SPEC}                              (made in a fresh directory)
    timeout: 30                                               (seconds)

argv items and file SPECs are text, or a generator (nothing big is committed):

    "text"                          as is (UTF-8); "{prefix}" becomes the case's etcd prefix
    {latin1: "\\xff..."}            bytes: each character one byte (invalid UTF-8, NULs)
    {head: .., repeat: .., times: N, tail: ..}
                                    head + repeat * N + tail; "{i}" in repeat is the index
                                    (with `numbered: true`)
    {symlink: /target}, {fifo: true}, {directory: true}     (files only)
    {series: {count: N, name: "u{i}.service", text: "...{i}...{next}..."}}
                                    (files: N files; next is (i + 1) % N)
    {glob: "dir/*.service"}         (argv: the matching files made for the case, sorted)
    {each: "u{i}.service", times: N}        (argv: N arguments)


Here: the tests that need no etcd and no process (README "Tests"); the others are in
tests/integration/hostile/test_corpus.py (in process) and tests/system/test_corpus.py
(the console script, a sample of each class)."""

from __future__ import annotations

from support.corpus import CASE_FILES, Case


def test_the_corpus_covers_every_class_of_the_issue() -> None:
    """Issue [7] item 4 names these classes; each has a directory of cases."""
    classes = {path.parent.name for path in CASE_FILES}
    assert classes >= {
        "names",
        "unit-files",
        "cycles",
        "templates",
        "yaml",
        "values",
        "endpoints",
        "prefixes",
        "limits",
    }, classes
    for path in CASE_FILES:
        Case.load(path)  # every case is well formed, even those a run would skip
