"""Test-wide pytest hooks. Kept light: fixtures that need services live in tests/integration."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import NoReturn

import pytest
from hypothesis import HealthCheck, settings

REPO_ROOT = Path(__file__).resolve().parents[1]

# kafka-python 3.0 loads its protocol schemas with importlib.resources functions that Python
# 3.11 deprecates: two hundred identical warnings per session, nothing to act on here. The
# module-level filter covers imports made while conftest files load; the ini lines cover tests.
KAFKA_PYTHON_NOISE = ("read_text is deprecated", "open_text is deprecated")
for _message in KAFKA_PYTHON_NOISE:
    warnings.filterwarnings("ignore", message=_message, category=DeprecationWarning)


# Hypothesis's per-example deadline and its "too slow" health check are timing checks: on a
# shared 2-core machine, with the unit and integration lanes of ./dev test side by side, they
# fail on load alone. Speed is measured by bench/, so the suite asserts behaviour, not time.
settings.register_profile(
    "rfm", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "rfm"))


def tools_required() -> bool:
    """Whether a missing tool (kcat, Chromium) fails a test instead of skipping it.

    The project's test command (``./dev test``, which CI runs) sets ``RFM_TEST_REQUIRE_TOOLS=1``
    and installs the tools first, so there a skip could only hide an untested path. A bare
    ``pytest`` on a developer's machine skips, saying how to get the tool. ``CI=true`` also
    requires them.
    """
    if os.environ.get("RFM_TEST_REQUIRE_TOOLS", "").strip() == "1":
        return True
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing_tool(what: str, how: str) -> NoReturn:
    """Fail (the project's test command) or skip (a bare pytest) for a missing tool."""
    if tools_required():
        pytest.fail(f"{what} is missing, and the test command requires it: {how}", pytrace=False)
    pytest.skip(f"{what} is missing: {how}")


def require_binary(name: str, how: str) -> str:
    """The path of ``name``, looked up when the test runs (after the stack installed it)."""
    found = shutil.which(name)
    if found is None:
        missing_tool(name, how)
    return found


def pytest_configure(config: pytest.Config) -> None:
    for message in KAFKA_PYTHON_NOISE:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:DeprecationWarning")


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Show which stack the integration tests will use (from .local/stack.env)."""
    if os.environ.get("RFM_TEST_STACK") == "external":
        return ["stack: external (RFM_KAFKA_BOOTSTRAP / RFM_REDIS_URL from the environment)"]
    stack_env = Path(os.environ.get("RFM_LOCAL_DIR", REPO_ROOT / ".local")) / "stack.env"
    if not stack_env.is_file():
        return ["stack: not started yet; integration tests start it (deploy/local/stack.sh)"]
    lines = [
        line.split("=", 1)[0] + "=***" if "PASSWORD=" in line else line  # stack.sh's secrets
        for line in stack_env.read_text().splitlines()
        if line.startswith("RFM_")
    ]
    return ["stack: " + ", ".join(lines)]
