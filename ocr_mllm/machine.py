"""How busy this machine is: the one reader of /proc/stat, for the thread choices of the quickstart and the benchmarks
(more torch threads than idle cores makes every step many times slower on a shared machine)."""

from __future__ import annotations

import os
import time


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cpu_times() -> tuple[int, int] | None:
    """(total, idle + iowait) jiffies of all cores since boot; None off Linux."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 4:
        return None
    return sum(fields[:8]), fields[3] + (fields[4] if len(fields) > 4 else 0)


def busy_cores(seconds: float = 1.0) -> float | None:
    """How many cores other work keeps busy, sampled over `seconds` while this process sleeps (None off Linux)."""
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(seconds)
    second = _cpu_times()
    total, idle = second[0] - first[0], second[1] - first[1]
    if total <= 0:
        return 0.0
    return round((total - idle) / total * (os.cpu_count() or 1), 2)
