"""What every test gets: one OpenMP thread per process, and the real-server fixtures.

The fixtures `s3_server`, `s3_restartable`, `s3_env`, `pushgateway` and `prometheus` are
defined in tests/support/servers.py and imported here so that pytest finds them; the other
helpers (stand-ins, raw flights, tiny shards, `skip_or_fail`) are plain modules under
tests/support/ that tests import.
"""

from __future__ import annotations

import os

# Tests train tiny models, often beside server processes and child processes of their own:
# one intra-op thread each avoids oversubscribing CI's 2 cores (measured: a tiny CBHNet step
# took 2.7 s with 2 OpenMP threads on a loaded machine, 0.04 s with 1). Set before torch loads;
# children inherit it. Benchmarks and `make run` keep all cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.support.servers import (  # noqa: E402,F401  (fixtures, found by pytest by name)
    prometheus,
    pushgateway,
    s3_env,
    s3_restartable,
    s3_server,
)
