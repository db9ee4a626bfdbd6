"""What holds for every test, unit and e2e alike.

The project's rule: no test skips itself in CI. A skip is fine on a workstation that lacks
an engine, root or a Debian package, but with CI=true it would let a missing prerequisite
pass silently, so there every skip is reported as a failure that names its reason.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest


def running_in_ci() -> bool:
    return os.environ.get("CI") == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and running_in_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: a test may not skip here ({reason}); install or start what it needs"
