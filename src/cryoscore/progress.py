"""Progress of long loops: a tqdm bar on a terminal, a plain line now and then elsewhere.

A progress bar written to a file or a pipe (a SLURM log, ``2> log``) is either nothing at all
(tqdm's ``disable=None``) or a stream of carriage returns. :func:`progress` gives a bar when
standard error is a terminal and otherwise :class:`LogProgress`, which writes a whole line
every :func:`log_interval_s` seconds (30 by default; the environment variable
``CRYOSCORE_PROGRESS_INTERVAL_S`` changes it): the count, the rate, the time left and any
postfix (``loss=0.0312``), and a last line at the end when it wrote any before.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator, TextIO

DEFAULT_LOG_INTERVAL_S = 30.0
"""Seconds between progress lines where there is no terminal."""
INTERVAL_VARIABLE = "CRYOSCORE_PROGRESS_INTERVAL_S"


def log_interval_s() -> float:
    """Seconds between progress lines: ``$CRYOSCORE_PROGRESS_INTERVAL_S`` when it is a number >= 0,
    else :data:`DEFAULT_LOG_INTERVAL_S`."""
    try:
        value = float(os.environ.get(INTERVAL_VARIABLE, ""))
    except ValueError:
        return DEFAULT_LOG_INTERVAL_S
    return value if value >= 0 else DEFAULT_LOG_INTERVAL_S


def _duration(seconds: float) -> str:
    """``"42 s"``, ``"3.5 min"`` or ``"2.1 h"``."""
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class LogProgress:
    """Iterate over ``iterable`` and write ``"DESC: 120/2000 step (6%), loss=0.03, 3.1 step/s, 10 min
    left"`` to ``file`` when ``interval_s`` has passed since the last line (or the start)."""

    def __init__(self, iterable: Iterable, *, total: int | None, desc: str, unit: str, initial: int = 0,
                 interval_s: float | None = None, file: TextIO | None = None):
        self._iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self._initial = initial
        self._interval_s = log_interval_s() if interval_s is None else interval_s
        self._file = file
        self._postfix = ""
        self._start = self._last = time.monotonic()
        self._lines = 0
        self._written_n = initial

    def set_postfix(self, **values: Any) -> None:
        """Show ``key=value`` for each of ``values`` in the next lines (as tqdm's ``set_postfix``)."""
        self._postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def line(self) -> str:
        """The progress line as of now."""
        elapsed = time.monotonic() - self._start
        done = self.n - self._initial
        parts = [f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if self._postfix:
            parts.append(self._postfix)
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{rate:.3g} {self.unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{self.unit}")
            if self.total:
                parts.append(f"{_duration((self.total - self.n) / rate)} left")
        parts.append(f"{_duration(elapsed)} so far")
        return f"{self.desc}: {', '.join(parts)}"

    def _write(self) -> None:
        print(self.line(), file=self._file or sys.stderr, flush=True)
        self._lines += 1
        self._written_n = self.n
        self._last = time.monotonic()

    def __iter__(self) -> Iterator:
        for item in self._iterable:
            yield item
            self.n += 1
            if time.monotonic() - self._last >= self._interval_s:
                self._write()
        self.close()

    def close(self) -> None:
        """Write the last line, when lines were written before and the count moved since."""
        if self._lines and self._written_n != self.n:
            self._write()


def progress(iterable: Iterable, *, total: int | None = None, desc: str, unit: str, enabled: bool = True,
             initial: int = 0):
    """A tqdm bar over ``iterable`` when standard error is a terminal, a :class:`LogProgress` when it is
    not, the bare iterable when ``enabled`` is false. Both have ``set_postfix``."""
    if not enabled:
        return _Silent(iterable)
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)


class _Silent:
    """``iterable`` with a ``set_postfix`` that does nothing."""

    def __init__(self, iterable: Iterable):
        self._iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self._iterable)

    def set_postfix(self, **values: Any) -> None:
        pass
