"""Skip a test whose real server or tool is missing — loudly, and never under CI."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip loudly when a real server/tool is missing — but fail under CI=true."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(f"NOT EXERCISED: {reason}")
