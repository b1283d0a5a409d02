"""Shared fixtures. Server fixtures (SeaweedFS, Pushgateway, Prometheus) live in
tests/servers.py; tiny synthetic data fixtures in tests/fixtures.py."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip loudly when a real server/tool is missing — but fail under CI=true."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(f"NOT EXERCISED: {reason}")
from tests.servers import *  # noqa: E402,F401,F403  (SeaweedFS / Pushgateway / Prometheus fixtures)
