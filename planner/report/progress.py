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

    def __init__(self, tty: bool | None = None, every: float = 1.0):
        self.t0, self.last = time.perf_counter(), 0.0
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.line = ""
        """The search's last report: rewritten with the clock at least every `every` seconds, also while
        one solve runs for long (a solver round can take longer than that)."""
        self.every = every
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._tick, daemon=True)
        if self.tty:
            self.thread.start()

    def _tick(self) -> None:
        while not self.stop.wait(self.every):
            with self.lock:
                if time.perf_counter() - self.t0 >= 1.0:
                    # profiling reports no steps: say which phase runs if it takes over a second
                    self._show(self.line or "profile: measuring the model's layers")

    def _show(self, line: str) -> None:
        now = time.perf_counter()
        self.last = now
        print(f"\rplan: {line}, {now - self.t0:.0f} s   ", end="", file=sys.stderr, flush=True)

    def __call__(self, phase: str, done: int, total: int) -> None:
        """`done` of at most `total` candidates this phase will solve (the total falls as the best plan
        improves and prunes more)."""
        with self.lock:
            self.line = f"{phase}: {done:,}/{total:,} candidates"
            now = time.perf_counter()
            if self.tty and now - self.t0 >= 1.0 and now - self.last >= 0.2:
                self._show(self.line)

    def done(self) -> None:
        self.stop.set()
        with self.lock:
            if self.tty and self.last:
                print("\r" + " " * 70 + "\r", end="", file=sys.stderr, flush=True)
            self.last = 0.0
