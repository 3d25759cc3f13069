"""Progress display: a rich progress bar on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import logging
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

log = logging.getLogger("tlapp")


class EpochProgress:
    """Shows one epoch's batches with loss and samples/s; ``update`` after each batch."""

    def __init__(self, description: str, total: int, interactive: bool | None = None):
        self.description = description
        self.total = total
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.started = time.perf_counter()
        self.samples = 0
        self._bar: Progress | None = None
        self._last_log = self.started

    def __enter__(self) -> EpochProgress:
        if self.interactive:
            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                console=Console(stderr=True), transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, stats="")
        return self

    def update(self, samples: int, **stats: float) -> None:
        self.samples += samples
        now = time.perf_counter()
        rate = self.samples / max(now - self.started, 1e-9)
        text = "  ".join(f"{k} {v:.4g}" for k, v in stats.items()) + f"  {rate:.1f} samples/s"
        if self._bar is not None:
            self._bar.update(self._task, advance=1, stats=text)
        elif now - self._last_log > 30:
            # Plain logs stay readable in CI and files: at most one line per 30 s.
            self._last_log = now
            log.info("%s: %s", self.description, text)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
