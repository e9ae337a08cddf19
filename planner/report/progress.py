"""Search progress on a terminal's stderr."""
from __future__ import annotations

import sys
import threading
import time

__all__ = ["Progress"]


class Progress:
    """Progress on a terminal's stderr, shown only once the work has taken over a second, as one line
    rewritten in place and erased at the end (so an error that follows is still one line). Piped or
    logged output gets none. Call it as `progress(phase, done, total)`; call `done()` at the end."""

    def __init__(self, tty: bool | None = None):
        self.t0, self.last = time.perf_counter(), 0.0
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.searching = False
        # profiling reports no steps: say which phase runs if it takes over a second
        self.timer = threading.Timer(1.0, self._profiling)
        self.timer.daemon = True
        if self.tty:
            self.timer.start()

    def _profiling(self) -> None:
        if not self.searching:
            self.last = time.perf_counter()
            print("\rplan: profile: measuring the model's layers", end="", file=sys.stderr, flush=True)

    def __call__(self, phase: str, done: int, total: int) -> None:
        self.searching = True
        now = time.perf_counter()
        if not self.tty or now - self.t0 < 1.0 or now - self.last < 0.2:
            return
        self.last = now
        print(f"\rplan: {phase}: {done:,}/{total:,} candidates, {now - self.t0:.0f} s   ", end="", file=sys.stderr,
              flush=True)

    def done(self) -> None:
        self.timer.cancel()
        if self.tty and self.last:
            print("\r" + " " * 70 + "\r", end="", file=sys.stderr, flush=True)
