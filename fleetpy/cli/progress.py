"""A blocking verb's progress on stderr: a live display on a terminal, else one line per
unit whenever its status changes."""

from collections.abc import Sequence
from typing import Any

from ..client import waiting
from ..client.waiting import WaitTarget
from ..log import escape_controls
from .output import say


class _PlainReporter:
    """On anything but a terminal: one stderr line per unit whenever its status changes."""

    def __init__(self, names: Sequence[str], target: WaitTarget) -> None:
        self.seen: dict[str, tuple[str, str]] = {}
        say(f"waiting for {len(names)} unit{'s' if len(names) != 1 else ''} to be {target}")

    def __call__(self, progress: list[waiting.UnitProgress]) -> None:
        for unit in progress:
            now = (unit.status, unit.detail)
            if self.seen.get(unit.name) != now:
                self.seen[unit.name] = now
                say(f"{unit.name}: {unit.detail}")

    def close(self) -> None:
        pass


class _RichReporter:
    """A live display on a terminal's stderr: one row per unit, or a summary for many."""

    MAX_ROWS = 12

    def __init__(self, console: Any, names: Sequence[str], target: WaitTarget) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.target = target
        # markup=False: engine reasons and systemd messages may hold [brackets].
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.rows = len(names) <= self.MAX_ROWS
        if self.rows:
            self.tasks = {n: self.progress.add_task(escape_controls(n), total=1) for n in names}
        else:
            self.summary = self.progress.add_task(f"to be {target}", total=len(names))
        self.progress.start()

    def __call__(self, progress: list[waiting.UnitProgress]) -> None:
        if self.rows:
            for unit in progress:
                self.progress.update(
                    self.tasks[unit.name],
                    completed=unit.status != "waiting",
                    description=escape_controls(f"{unit.name}: {unit.detail}"),
                )
        else:
            done = sum(u.status != "waiting" for u in progress)
            pending = next((u for u in progress if u.status == "waiting"), None)
            detail = f" ({pending.name}: {pending.detail})" if pending else ""
            self.progress.update(
                self.summary,
                completed=done,
                description=escape_controls(f"to be {self.target}{detail}"),
            )

    def close(self) -> None:
        self.progress.stop()


def progress_reporter(names: Sequence[str], target: WaitTarget) -> _PlainReporter | _RichReporter:
    from rich.console import Console

    console = Console(stderr=True)
    if console.is_terminal:
        return _RichReporter(console, names, target)
    return _PlainReporter(names, target)
