"""Progress of a batch job on stderr: a bar on a terminal (rich: done/total, images/s, ETA, failures and retries
as they happen), else a notice line while requests are being retried; nothing when quiet."""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

NOTICE_EVERY = 5.0  # seconds between two retry notices


class JobProgress:
    """Counts of a running job: ``finished`` and ``retried`` update them and what is shown."""

    def __init__(self, notify: Callable[[str], None] | None = None) -> None:
        self.done = self.failed = self.retries = 0
        self.last_retry = ""  # the reason word of the last retry
        self.redraw: Callable[[], None] = lambda: None
        self._notify = notify
        self._noticed = float("-inf")

    def finished(self, ok: bool) -> None:
        """Count one input answered (``ok``) or failed."""
        self.done += 1
        self.failed += not ok
        self.redraw()

    def retried(self, reason: str, error: str) -> None:
        """Count one retry; give a notice (at most every NOTICE_EVERY seconds) when notices are on."""
        self.retries += 1
        self.last_retry = reason
        self.redraw()
        now = time.monotonic()
        if self._notify is not None and now - self._noticed >= NOTICE_EVERY:
            self._noticed = now
            self._notify(f"retrying ({reason}: {error}); retries so far: {self.retries}")

    def status(self) -> str:
        """What the bar shows after the rate: e.g. "failed 2, retries 12 (unavailable)"; "" until either happens."""
        parts = [f"failed {self.failed}"] if self.failed else []
        if self.retries:
            parts.append(f"retries {self.retries} ({self.last_retry})")
        return ", ".join(parts)


@contextlib.contextmanager
def job_progress(total: int, bar: bool, notify: Callable[[str], None] | None = None) -> Iterator[JobProgress]:
    """Yield the JobProgress of a job of ``total`` inputs: drawn as a bar when ``bar``, else only retry
    notices passed to ``notify`` (none when it is None)."""
    if not bar:
        yield JobProgress(notify)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(f"{task.speed or 0.0:.1f} images/s")

    progress = JobProgress()
    columns = (BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn(), TextColumn("{task.fields[status]}", markup=False))
    with Progress(*columns, console=Console(stderr=True)) as shown:
        task = shown.add_task("classify", total=total, status="")
        progress.redraw = lambda: shown.update(task, completed=progress.done, status=progress.status())
        yield progress
