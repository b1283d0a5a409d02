"""Retry policy for the S3 backend: bounded exponential backoff around transient errors.

Retries are ours and explicit: the minio client's urllib3 pool would otherwise retry 5 times
on connection errors and 500-504 with 5-minute timeouts (minio 7.2 defaults), so S3Store hands
it a pool with retries off and short timeouts, and every S3 call goes through `with_retries`,
bounded by attempts and total time (`RetryPolicy`).

    policy = RetryPolicy.from_env()                     # $CLOUDML_STORE_RETRIES, ..._SECONDS
    data = with_retries(lambda: client.get(...), "download s3://b/k", policy)
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from cloudml.errors import StorageError

log = logging.getLogger(__name__)

# S3 error codes that mean "try again"; everything else in S3Error is final.
TRANSIENT_S3_CODES = frozenset(
    {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"}
)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: at most `attempts` tries and `max_total_s` seconds."""

    attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_total_s: float = 60.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """CLOUDML_STORE_RETRIES / CLOUDML_STORE_RETRY_SECONDS override the defaults."""
        p = cls()
        try:
            attempts = int(os.environ.get("CLOUDML_STORE_RETRIES", p.attempts))
            total = float(os.environ.get("CLOUDML_STORE_RETRY_SECONDS", p.max_total_s))
        except ValueError as e:
            raise StorageError(
                f"CLOUDML_STORE_RETRIES / CLOUDML_STORE_RETRY_SECONDS must be numbers: {e}"
            ) from None
        return cls(attempts=max(1, attempts), max_total_s=total)


def backoff_delays(policy: RetryPolicy, jitter: Callable[[], float] = random.random) -> list[float]:
    """Sleep before each retry (len = attempts - 1): base * 2^i capped, with up to 25% jitter."""
    delays = []
    for i in range(policy.attempts - 1):
        d = min(policy.max_delay_s, policy.base_delay_s * 2**i)
        delays.append(d * (0.75 + 0.25 * jitter()))
    return delays


def is_transient(exc: BaseException) -> bool:
    """Connection refused/reset, timeouts, HTTP 5xx and SlowDown are worth retrying."""
    import urllib3.exceptions
    from minio.error import InvalidResponseError, S3Error, ServerError

    if isinstance(exc, urllib3.exceptions.SSLError):
        return False  # a TLS misconfiguration does not heal itself
    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, S3Error):
        status = exc.response.status if exc.response is not None else 0
        return exc.code in TRANSIENT_S3_CODES or status >= 500
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):
        return getattr(exc, "_code", 0) >= 500
    return False


def with_retries(
    op: Callable[[], T],
    what: str,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run `op`, retrying transient errors per `policy`; the last error propagates."""
    start = clock()
    delays = backoff_delays(policy)
    for attempt in range(policy.attempts):
        try:
            return op()
        except Exception as e:
            if not is_transient(e) or attempt == policy.attempts - 1:
                raise
            delay = delays[attempt]
            if clock() - start + delay > policy.max_total_s:
                raise
            log.warning(
                "%s: transient error (%s), retry %d/%d in %.1fs",
                what,
                type(e).__name__,
                attempt + 1,
                policy.attempts - 1,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
