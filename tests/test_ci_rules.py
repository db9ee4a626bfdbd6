"""tests/conftest.py: under CI=true a skip is a failure; elsewhere it stays a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIPPING_TEST = "import pytest\n\ndef test_needs_an_engine():\n    pytest.skip('no Docker engine')\n"


def run_pytest_on(folder: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "-c", os.devnull, "--rootdir", str(folder), str(folder)],
        capture_output=True, text=True, env=env, cwd=folder, timeout=120, check=False,
    )


@pytest.mark.parametrize(("ci", "expected"), [("true", "1 failed"), (None, "1 skipped"), ("false", "1 skipped")])
def test_a_skip_fails_only_in_ci(tmp_path: Path, ci: str | None, expected: str) -> None:
    (tmp_path / "test_skips.py").write_text(SKIPPING_TEST)
    result = run_pytest_on(tmp_path, ci)
    assert expected in result.stdout, result.stdout + result.stderr
    if ci == "true":
        assert "no Docker engine" in result.stdout and "CI=true" in result.stdout
