"""Progress of a running sweep: a rich bar on a terminal, one plain line every few seconds otherwise.

Peers' status tables are spammy (ecosystem.md §4); here a terminal gets one bar
(rows done/total, rate, ETA, lockups so far per policy) and a log (Ray job, CI,
`--tmux`) gets one short line per interval plus a one-line summary at the end.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TextIO


def _fmt_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """Counts rows as they are stored or computed and reports them.

    `interval` (seconds between plain lines) defaults to $OOMSWEEP_PROGRESS_SECONDS or 5.
    """

    def __init__(
        self,
        total: int,
        policies: Sequence[str],
        *,
        stream: TextIO | None = None,
        interval: float | None = None,
        tty: bool | None = None,
        skipped: int = 0,
        label: str = "oomsweep",
    ) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.done = 0
        self.failed = 0
        self.skipped = skipped
        self.lockups: dict[str, int] = {p: 0 for p in policies}
        self.label = label
        if interval is None:
            interval = float(os.environ.get("OOMSWEEP_PROGRESS_SECONDS", "5"))
        self.interval = interval
        self.tty = self.stream.isatty() if tty is None else tty
        self._t0 = time.monotonic()
        self._last_line = self._t0
        self._bar = None
        self._task = None
        if self.tty:
            self._start_bar()

    # -- rich bar --------------------------------------------------------------------------------
    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress
        from rich.text import Text

        class _Bar(RichProgress):
            """The bar line, then one line of lockups per policy (too wide to share the bar's line)."""

            extra_line = ""

            def get_renderables(self):
                yield self.make_tasks_table(self.tasks)
                if self.extra_line:
                    yield Text(self.extra_line, overflow="ellipsis", no_wrap=True)

        self._bar = _Bar(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(file=self.stream),
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(self.label, total=self.total, rate="")

    # -- counting --------------------------------------------------------------------------------
    @property
    def rate(self) -> float:
        dt = time.monotonic() - self._t0
        return self.done / dt if dt > 0 else 0.0

    @property
    def eta_s(self) -> float:
        r = self.rate
        return (self.total - self.done) / r if r > 0 else float("inf")

    def set_total(self, total: int) -> None:
        self.total = max(total, self.done)
        if self._bar is not None:
            self._bar.update(self._task, total=self.total)

    def advance(self, rows: int, lockups: Mapping[str, int] | None = None, failed: int = 0) -> None:
        self.done += rows
        self.failed += failed
        for p, k in (lockups or {}).items():
            self.lockups[p] = self.lockups.get(p, 0) + k
        self.refresh()

    def _lockup_text(self) -> str:
        return " ".join(f"{p}={k}" for p, k in self.lockups.items())

    def line(self) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        parts = [
            f"{self.label}: {self.done}/{self.total} rows ({pct:.0f}%)",
            f"{self.rate:.0f} rows/s",
            f"ETA {_fmt_duration(self.eta_s)}",
        ]
        if self.failed:
            parts.append(f"failed {self.failed}")
        parts.append(f"lockups {self._lockup_text()}")
        return ", ".join(parts)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._bar is not None:
            failed = f"failed {self.failed}, " if self.failed else ""
            self._bar.extra_line = f"  {failed}lockups so far: {self._lockup_text()}"
            self._bar.update(self._task, completed=self.done, rate=f"{self.rate:.0f} rows/s")
            return
        if force or now - self._last_line >= self.interval:
            self._last_line = now
            print(self.line(), file=self.stream, flush=True)

    def close(self, status: str = "done") -> None:
        if self._bar is not None:
            self.refresh()
            self._bar.stop()
            self._bar = None
        wall = time.monotonic() - self._t0
        print(
            f"{self.label}: {status}: rows={self.done} failed={self.failed} skipped={self.skipped} "
            f"wall={wall:.1f}s lockups: {self._lockup_text()}",
            file=self.stream,
            flush=True,
        )
