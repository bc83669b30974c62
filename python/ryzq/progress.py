"""A progress line on stderr: tensors and bytes done, throughput and time left."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(
        self, total_bytes: int, label: str = "", stream=None, *, unit: str = "tensors"
    ) -> None:
        self.total_bytes = max(total_bytes, 1)
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.done_bytes = 0
        self.start = time.perf_counter()
        self._last = 0.0

    def __call__(self, done: int, total: int, nbytes: int) -> None:
        self.done_bytes += nbytes
        now = time.perf_counter()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        elapsed = now - self.start
        frac = min(self.done_bytes / self.total_bytes, 1.0)
        rate = self.done_bytes / elapsed / 1e9 if elapsed > 0 else 0.0
        left = elapsed * (1 - frac) / frac if frac > 0 else 0.0
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        self.stream.write(
            f"\r{self.label}[{bar}] {done}/{total} {self.unit} "
            f"{self.done_bytes / 1e9:.2f}/{self.total_bytes / 1e9:.2f} GB "
            f"{rate:.2f} GB/s {left:4.0f}s left"
        )
        if done == total:
            self.stream.write("\n")
        self.stream.flush()


class StepProgress:
    """A progress line on stderr for work counted in steps (the windows of an evaluation)."""

    def __init__(self, total: int, label: str = "", *, unit: str = "steps", stream=None) -> None:
        self.total = max(total, 1)
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self.step(0)

    def step(self, n: int = 1) -> None:
        self.done += n
        elapsed = time.perf_counter() - self.start
        frac = min(self.done / self.total, 1.0)
        left = elapsed * (1 - frac) / frac if frac > 0 else 0.0
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        self.stream.write(
            f"\r{self.label}[{bar}] {self.done}/{self.total} {self.unit} {left:4.0f}s left"
        )
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()
