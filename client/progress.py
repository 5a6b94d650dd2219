"""A progress bar for batch jobs (rich, on stderr): done/total, images/s, ETA; a no-op when disabled."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator


@contextlib.contextmanager
def progress_bar(total: int, enabled: bool) -> Iterator[Callable[[], None]]:
    """Yield ``advance()``, which counts one finished input; draws nothing unless ``enabled``."""
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(f"{task.speed or 0.0:.1f} images/s")

    with Progress(BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn(), console=Console(stderr=True)) as progress:
        task = progress.add_task("classify", total=total)
        yield lambda: progress.advance(task)
