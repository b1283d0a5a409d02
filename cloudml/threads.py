"""How many threads a process should compute with: the CPUs it may really use.

torch takes every core it sees. In a pod with a CPU limit of 4 on a 64-core GPU node that is
64 OpenMP threads throttled by a 4-CPU CFS quota; on a shared machine the threads spin at
barriers against a busy core. So intra-op threads follow, in order of precedence:

1. `CLOUDML_THREADS` (an explicit count: the user's),
2. the smallest of: `CLOUDML_CPU_REQUEST` (the pipeline sets it to each task's CPU request,
   since a request without a limit gives the container no quota to read; on a machine with
   fewer CPUs, as in a local run, the machine wins), the cgroup CPU quota: v2 `cpu.max` ("<quota> <period>" or "max ..."), v1
   `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1: none), the smallest along the cgroup's path,
   rounded down, at least 1,
   and the affinity mask (`os.sched_getaffinity`), which taskset / cpusets restrict.

OpenMP's wait policy is left to libgomp (spin a while, then sleep) unless the user sets
`OMP_WAIT_POLICY`: measured at local scale on 2 cores (bench/threads_bench.py,
docs/deploy.md 'Threads: how many, and under contention'), PASSIVE keeps 53% of the quiet throughput
beside one busy process instead of 37%, but costs up to 5% when the machine is quiet; the
quiet case is the usual one, so PASSIVE is the documented setting for a shared machine,
not the default.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from cloudml.errors import ConfigError

ENV_THREADS = "CLOUDML_THREADS"
ENV_REQUEST = "CLOUDML_CPU_REQUEST"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_paths(proc_cgroup: str) -> tuple[str | None, str | None]:
    """(v2 path, v1 cpu-controller path) of this process from /proc/self/cgroup's text."""
    v2 = v1 = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _ancestors(root: Path, rel: str) -> list[Path]:
    """root/rel and each parent of it up to root (a quota anywhere above applies too)."""
    parts = [p for p in rel.strip("/").split("/") if p]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _quota_v2(text: str | None) -> float | None:
    if not text:
        return None
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _quota_v1(quota: str | None, period: str | None) -> float | None:
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_cpu_limit(
    cgroup_root: Path = Path("/sys/fs/cgroup"), proc_cgroup: str | None = None
) -> float | None:
    """The CPU quota (in CPUs, e.g. 1.5) of this process's cgroup, or None when unlimited
    or unreadable. Reads v2 (unified) first, then v1."""
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
    v2, v1 = _cgroup_paths(proc_cgroup)
    limits: list[float] = []
    if v2 is not None:
        for d in _ancestors(cgroup_root, v2):
            q = _quota_v2(_read(d / "cpu.max"))
            if q is not None:
                limits.append(q)
    if not limits and v1 is not None:
        for base in (cgroup_root / "cpu,cpuacct", cgroup_root / "cpu"):
            for d in _ancestors(base, v1):
                q = _quota_v1(_read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us"))
                if q is not None:
                    limits.append(q)
            if limits:
                break
    return min(limits) if limits else None


def affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def thread_count(
    env: dict[str, str] | None = None,
    *,
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    proc_cgroup: str | None = None,
    affinity: int | None = None,
) -> int:
    """Intra-op threads for this process: CLOUDML_THREADS, else min(CLOUDML_CPU_REQUEST,
    quota, affinity)."""
    env = os.environ if env is None else env
    explicit = env.get(ENV_THREADS, "").strip()
    if explicit:
        try:
            n = int(explicit)
        except ValueError:
            n = 0
        if n < 1 or n > 1024:
            raise ConfigError(f"{ENV_THREADS}: must be an integer in [1, 1024], got {explicit!r}")
        return n
    cpus = affinity_cpus() if affinity is None else affinity
    request = env.get(ENV_REQUEST, "").strip()
    if request:
        try:
            cpus = min(cpus, max(1, math.floor(float(request))))
        except ValueError:
            raise ConfigError(f"{ENV_REQUEST}: must be a number of CPUs, got {request!r}") from None
    quota = cgroup_cpu_limit(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def prepare_process_env(env: dict[str, str] | None = None) -> int:
    """Before torch is imported: OMP_NUM_THREADS to the usable CPUs, unless the user set it.
    Child processes (KFP's local runner starts one per task) inherit it. Returns the thread
    count."""
    env = os.environ if env is None else env
    n = thread_count(env)
    env.setdefault("OMP_NUM_THREADS", str(n))
    return n


def configure_torch_threads(env: dict[str, str] | None = None) -> int:
    """torch's intra-op threads to the usable CPUs (for processes that imported torch
    before `prepare_process_env` could run, e.g. a KFP component's executor). An
    OMP_NUM_THREADS the process was started with stands unless CLOUDML_THREADS is set: torch
    already took it, and the user (or `prepare_process_env` in the parent) chose it."""
    import torch

    env = os.environ if env is None else env
    if not env.get(ENV_THREADS, "").strip() and env.get("OMP_NUM_THREADS", "").strip():
        return torch.get_num_threads()
    n = thread_count(env)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
