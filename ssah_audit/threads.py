"""How many threads the model work runs on: the cores this process may actually use. torch starts one thread per core
it sees, and in a container limited by a CPU quota (docker --cpus 2 on a 64-core host) it sees the host's: 64
threads on 2 cores' worth of time spin against each other and run many times slower (two OpenMP jobs on two cores
did, BENCHMARKS.md). The command line therefore sets OMP_NUM_THREADS, before torch loads, to the smaller of the
cores in the process's affinity mask and its cgroup quota, unless the user set it (or SSAH_AUDIT_THREADS)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from .errors import UserError

CGROUP = Path("/sys/fs/cgroup")


def cgroup_quota(root: Path = CGROUP) -> float | None:
    """CPUs' worth of time the cgroup grants (cgroup v2 cpu.max "200000 100000" -> 2.0, v1 cfs quota / period);
    None without a limit or a readable file."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cores(root: Path = CGROUP) -> int:
    """The cores this process may run on: its affinity mask, capped by its cgroup quota (rounded down, at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_quota(root)
    return max(1, min(cores, math.floor(quota))) if quota else cores


def use_available_cores(environ=os.environ, root: Path = CGROUP) -> str:
    """Set OMP_NUM_THREADS to available_cores() unless it or SSAH_AUDIT_THREADS is set (that one wins); returns the
    value in force. Call before torch is imported: torch reads it once, as it starts."""
    if environ.get("SSAH_AUDIT_THREADS"):
        value = environ["SSAH_AUDIT_THREADS"].strip()
        if not value.isdigit() or int(value) < 1:
            raise UserError(f"SSAH_AUDIT_THREADS must be a whole number of threads >= 1, not {value!r}")
        environ["OMP_NUM_THREADS"] = value
    elif not environ.get("OMP_NUM_THREADS"):
        environ["OMP_NUM_THREADS"] = str(available_cores(root))
    return environ["OMP_NUM_THREADS"]
