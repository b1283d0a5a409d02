"""The allocator CPU training runs under: jemalloc, however `cloudml` is started.

Under glibc malloc every freed activation buffer above glibc's mmap threshold goes back to
the kernel and faults in again on the next step (system time above user time at full size:
issue 18's 2.6x). jemalloc with decay off keeps them mapped. `make run`, `make test` and
the images preload it (scripts/jemalloc-env.sh, images/Dockerfile); a user who starts
`cloudml` or `python -m cloudml` plainly would not get it, so the CLI re-executes itself
once with jemalloc preloaded when the library is installed (`reexec_under_jemalloc`).

glibc's own knobs were measured as the alternative (bench/train_bench.py --size 220x320
--batch 8 --steps 3 --warmup 1, one run each on the 2-core AMD EPYC at commit a58d1a6,
2026-12-01, other load on the cores: page faults and system time are what it shows, not
wall time):
default glibc 11.5 M minor faults, 43 s system, 5.3 GB peak RSS; MALLOC_MMAP_MAX_=0 with
no trimming 2.1 M, 8 s, 8.4 GB; jemalloc 1.5 M, 4 s, 5.9 GB. Turning mmap off nearly
closes the fault gap but costs 40% more memory: 40% over the 12.7 GiB that full size at
batch 20 peaks at under jemalloc is ~18 GiB, over the 16 GiB budget (extrapolated, not
measured at full size), so it is not applied.

CLOUDML_NO_JEMALLOC=1 keeps glibc (e.g. to measure it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence

# Debian's paths (amd64, arm64): the same list as scripts/jemalloc-env.sh
JEMALLOC_LIBS = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
)
MALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"  # freed pages stay mapped
ENV_OFF = "CLOUDML_NO_JEMALLOC"
ENV_DONE = "CLOUDML_JEMALLOC_REEXEC"  # set in the re-executed process: never twice


def jemalloc_loaded(env: Mapping[str, str], maps: str | None = None) -> bool:
    """Whether this process runs under jemalloc: preloaded, or mapped (`maps`: the text of
    /proc/self/maps, read when None and the file exists)."""
    if "jemalloc" in env.get("LD_PRELOAD", ""):
        return True
    if maps is None:
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
                maps = f.read()
        except OSError:
            maps = ""
    return "libjemalloc" in maps


def reexec_env(
    env: Mapping[str, str],
    libs: Sequence[str] = JEMALLOC_LIBS,
    exists: Callable[[str], bool] = os.path.exists,
    maps: str | None = None,
) -> dict[str, str] | None:
    """The environment to re-execute this process under jemalloc, or None when it should
    not be: already under jemalloc, already re-executed once, turned off, or not installed
    (pure given `exists` and `maps`)."""
    if env.get(ENV_OFF, "").strip() not in ("", "0") or env.get(ENV_DONE):
        return None
    if jemalloc_loaded(env, maps):
        return None
    lib = next((p for p in libs if exists(p)), None)
    if lib is None:
        return None
    out = dict(env)
    out["LD_PRELOAD"] = " ".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    out.setdefault("MALLOC_CONF", MALLOC_CONF)
    out[ENV_DONE] = "1"
    return out


def reexec_under_jemalloc(args: Sequence[str]) -> None:
    """Replace this process with `python args...` under jemalloc when `reexec_env` says so
    (same PID, same stdio); otherwise return and run on as it is."""
    env = reexec_env(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *args], env)
