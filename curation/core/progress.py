"""Progress reporting and cancellation shared by engine functions, jobs and the CLI."""

from __future__ import annotations

from typing import Callable, Optional

ProgressFn = Callable[[float, str], None]
"""``progress(fraction_done in [0, 1], message)``; it may raise :class:`Cancelled` to stop the work."""


class Cancelled(Exception):
    """Raised from a progress callback when the user cancelled the job."""


def null_progress(fraction: float, message: str = "") -> None:
    """A progress callback that ignores everything."""


def sub_progress(progress: Optional[ProgressFn], start: float, end: float) -> ProgressFn:
    """Map a child's [0, 1] progress onto [start, end] of the parent's."""
    parent = progress or null_progress

    def child(fraction: float, message: str = "") -> None:
        parent(start + (end - start) * min(max(fraction, 0.0), 1.0), message)

    return child


class TqdmProgress:
    """A progress callback that draws a terminal bar (for the CLI)."""

    def __init__(self, desc: str, total: int = 1000) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="‰", bar_format="{desc}: {percentage:3.0f}%|{bar}| "
                                                                       "{elapsed}<{remaining} {postfix}")
        self.total = total

    def __call__(self, fraction: float, message: str = "") -> None:
        n = int(min(max(fraction, 0.0), 1.0) * self.total)
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)
        if message:
            self.bar.set_postfix_str(message[:60], refresh=False)

    def close(self) -> None:
        self.bar.update(self.total - self.bar.n)
        self.bar.close()
