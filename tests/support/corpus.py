"""A case of the bad-input corpus (tests/corpus/<class>/<case>.yaml), read from its file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from support.paths import CORPUS

CASE_FILES = sorted(CORPUS.glob("*/*.yaml"))


KEYS = {"about", "argv", "code", "error", "stdout", "env", "files", "timeout"}


@dataclass(frozen=True)
class Case:
    path: Path
    about: str
    argv: tuple[Any, ...]
    code: int = 1
    error: str | None = None
    stdout: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 30

    @classmethod
    def load(cls, path: Path) -> Case:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert isinstance(data, dict), f"{path}: a case is a mapping"
        unknown = set(data) - KEYS
        assert not unknown, f"{path}: unknown keys {sorted(unknown)} (known: {sorted(KEYS)})"
        assert isinstance(data.get("about"), str) and data["about"], f"{path}: say what it is"
        assert isinstance(data.get("argv"), list) and data["argv"], f"{path}: argv is a list"
        code = data.get("code", 1)
        assert (code == 0) == ("stdout" in data), f"{path}: stdout goes with code 0, only"
        assert code == 0 or "error" in data, f"{path}: a refused case names its error"
        return cls(
            path,
            data["about"],
            tuple(data["argv"]),
            code,
            data.get("error"),
            data.get("stdout"),
            {str(k): str(v) for k, v in (data.get("env") or {}).items()},
            data.get("files") or {},
            float(data.get("timeout", 30)),
        )
