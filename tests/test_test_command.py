"""scripts/test, the README's test command, and .ci/run, which is exactly that command with CI=true.

The machine setup cannot run here for real (it installs Debian packages and starts dockerd), so
a copy of the project runs with stand-ins for scripts/install-test-deps, scripts/start-dockerd,
scripts/check-stack-files, `id`, `python3` and the interpreter; each stand-in appends its name
and arguments to one log, which shows the order of the calls.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Appends "<name> <args>" to $CALLS; a name listed in $FAIL exits 1.
STAND_IN = """#!/bin/sh
echo "NAME $* CI=${CI:-}" >> "$CALLS"
case " $FAIL " in *" NAME "*) exit 1 ;; esac
"""
# `python3 -m venv .venv` makes .venv/bin/python, itself a stand-in.
PYTHON3 = """#!/bin/sh
echo "python3 $*" >> "$CALLS"
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin"
  printf '#!/bin/sh\\necho "venv-python $* CI=${CI:-}" >> "$CALLS"\\n' > "$3/bin/python"
  chmod +x "$3/bin/python"
fi
"""


def _tool(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def project(tmp_path: Path) -> Path:
    """The real scripts/test and .ci/run in a copy whose other commands are stand-ins."""
    copy = tmp_path / "project"
    (copy / "scripts").mkdir(parents=True)
    (copy / ".ci").mkdir()
    shutil.copy(ROOT / "scripts" / "test", copy / "scripts" / "test")
    shutil.copy(ROOT / ".ci" / "run", copy / ".ci" / "run")
    for name in ("install-test-deps", "start-dockerd", "check-stack-files"):
        _tool(copy / "scripts" / name, STAND_IN.replace("NAME", name))
    bin_dir = tmp_path / "bin"
    _tool(bin_dir / "python", STAND_IN.replace("NAME", "python"))
    _tool(bin_dir / "python3", PYTHON3)
    return copy


def run(tmp_path: Path, command: str, *, uid: int = 0, python: bool = True, **env: str) -> list[str]:
    copy = project(tmp_path)
    bin_dir = tmp_path / "bin"
    _tool(bin_dir / "id", f"#!/bin/sh\n[ \"$1\" = -u ] && echo {uid}\n")
    calls = tmp_path / "calls"
    environment = {
        "PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls), "HOME": str(tmp_path),
        **({"REGISTRY_STACK_PYTHON": str(bin_dir / "python")} if python else {}), **env,
    }
    result = subprocess.run(
        [command], cwd=copy, env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    log = calls.read_text().splitlines() if calls.exists() else []
    return [f"exit {result.returncode}", *log]


def names(log: list[str]) -> list[str]:
    return [" ".join(line.split()[:3]) if line.startswith(("python ", "venv-python ")) else line.split()[0]
            for line in log[1:]]


def test_as_root_the_machine_is_set_up_first_then_every_check_runs(tmp_path: Path) -> None:
    log = run(tmp_path, "scripts/test")
    assert log[0] == "exit 0"
    assert names(log) == [
        "install-test-deps", "start-dockerd",
        "python -m ruff", "python -m mypy", "check-stack-files", "python -m pytest",
    ]


def test_on_a_fresh_machine_the_virtualenv_is_made_after_the_packages(tmp_path: Path) -> None:
    """python3-venv comes from install-test-deps, so the virtualenv must come after it."""
    log = run(tmp_path, "scripts/test", python=False)
    assert log[0] == "exit 0"
    assert names(log) == [
        "install-test-deps", "start-dockerd", "python3",
        "venv-python -m pip", "venv-python -m ruff", "venv-python -m mypy", "check-stack-files",
        "venv-python -m pytest",
    ]
    assert "python3 -m venv .venv" in log


@pytest.mark.parametrize(("uid", "env"), [(0, {"REGISTRY_STACK_NO_SETUP": "1"}), (1000, {})],
                         ids=["opted-out", "not-root"])
def test_no_setup_when_opted_out_or_not_root(tmp_path: Path, uid: int, env: dict[str, str]) -> None:
    log = run(tmp_path, "scripts/test", uid=uid, **env)
    assert log[0] == "exit 0"
    assert names(log) == ["python -m ruff", "python -m mypy", "check-stack-files", "python -m pytest"]


@pytest.mark.parametrize("failing", ["install-test-deps", "start-dockerd", "check-stack-files"])
def test_a_failed_step_stops_the_command_before_pytest(tmp_path: Path, failing: str) -> None:
    log = run(tmp_path, "scripts/test", FAIL=failing)
    assert log[0] != "exit 0"
    assert names(log)[-1] == failing
    assert "python -m pytest" not in names(log)


def test_ci_run_is_exactly_the_test_command_with_ci_true(tmp_path: Path) -> None:
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert lines == ["export CI=true; exec scripts/test"]
    log = run(tmp_path, ".ci/run")
    assert log[0] == "exit 0"
    assert names(log)[:2] == ["install-test-deps", "start-dockerd"]
    pytest_call = next(line for line in log if line.startswith("python -m pytest"))
    assert pytest_call.endswith("CI=true")


def test_the_readme_gives_the_test_command_alone() -> None:
    section = (ROOT / "README.md").read_text().split("## Tests", 1)[1].split("\n## ", 1)[0]
    first_block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    assert first_block.strip() == "scripts/test"
    assert "REGISTRY_STACK_NO_SETUP=1" in section
    assert os.access(ROOT / "scripts" / "test", os.X_OK) and os.access(ROOT / ".ci" / "run", os.X_OK)


def _reproduced_table() -> list[list[str]]:
    section = (ROOT / "README.md").read_text().split("### What the tests reproduce", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[1:]]


def test_the_readme_table_of_reproduced_behaviour_names_what_exists() -> None:
    """Every file the table names as the stand-in exists, and names it gives with a file are in it."""
    rows = _reproduced_table()
    assert len(rows) >= 10 and all(len(row) == 3 and row[2] for row in rows)
    local = ("tests/", "testbed/", "tools/", "components/", "scripts/")
    for _, reproduced_by, _ in rows:
        # Cells read "`path` `name`; `path`, ...": each name refers to the path before it.
        current: Path | None = None
        for token in re.findall(r"`([^`]+)`", reproduced_by):
            if token.startswith(local):
                current = ROOT / token.split(" ")[0]
                assert current.exists(), f"README names {token}, which does not exist"
            elif current is not None and current.suffix == ".py" and re.fullmatch(r"[A-Za-z_.]+", token):
                name = token.rsplit(".", 1)[-1]
                assert re.search(rf"\b(def|class) {re.escape(name)}\b", current.read_text()), (
                    f"README names {token} in {current.relative_to(ROOT)}, which does not define it"
                )
