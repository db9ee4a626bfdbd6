"""The GitHub Actions workflow users get: actionlint-clean, and shaped as docs/ci.md says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PULUMI_WORKFLOW = ROOT / ".github" / "workflows" / "pulumi.yml"
CI_DOC = ROOT / "docs" / "ci.md"
STACKS = sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))


def actionlint() -> str:
    """The actionlint of requirements-dev.txt: next to this Python (a venv) or on PATH."""
    beside = Path(sys.executable).parent / "actionlint"
    found = str(beside) if beside.exists() else shutil.which("actionlint")
    if not found:
        pytest.fail("actionlint is missing: pip install -r requirements-dev.txt")
    return found


def run_actionlint(*files: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [actionlint(), "-no-color", *map(str, files)], cwd=cwd, capture_output=True, text=True, timeout=120,
        check=False,
    )


def test_there_is_a_workflow() -> None:
    assert PULUMI_WORKFLOW in WORKFLOWS


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_actionlint_finds_nothing(workflow: Path) -> None:
    result = run_actionlint(workflow)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_does_find_mistakes(tmp_path: Path) -> None:
    """Guard against a linter that passes everything: a misspelt input and a bad expression."""
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    broken = folder / "broken.yml"
    text = PULUMI_WORKFLOW.read_text().replace("stack-name: dev", "stak-name: dev")
    broken.write_text(text.replace("${{ matrix.stack }}", "${{ matrix.stacks }}"))
    result = run_actionlint(broken, cwd=tmp_path)
    assert result.returncode != 0
    assert 'input "stak-name" is not defined in action "pulumi/actions' in result.stdout
    assert "matrix.stacks" in result.stdout


# ---------------------------------------------------------------------------------------
# The shape docs/ci.md promises
# ---------------------------------------------------------------------------------------


def workflow() -> dict[str, Any]:
    data = yaml.safe_load(PULUMI_WORKFLOW.read_text())
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def steps_of(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def pulumi_step(job: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    (found,) = [(i, s) for i, s in enumerate(steps_of(job)) if str(s.get("uses", "")).startswith("pulumi/actions@")]
    return found


def test_triggers_are_pull_requests_and_pushes_to_main() -> None:
    triggers = workflow()["on"]
    assert triggers["pull_request"]["branches"] == ["main"]
    assert triggers["push"]["branches"] == ["main"]


def test_pull_requests_preview_every_stack() -> None:
    job = workflow()["jobs"]["preview"]
    assert "github.event_name == 'pull_request'" in job["if"]
    # Every Pulumi.<stack>.yaml is previewed: a new stack file needs a matrix entry.
    assert "dev" in STACKS and sorted(job["strategy"]["matrix"]["stack"]) == STACKS
    assert job["strategy"]["fail-fast"] is False
    _, step = pulumi_step(job)
    assert step["with"]["command"] == "preview"
    assert step["with"]["stack-name"] == "${{ matrix.stack }}"
    assert job["permissions"]["pull-requests"] == "write"


def test_pushes_to_main_deploy_dev_only() -> None:
    jobs = workflow()["jobs"]
    ups = {name: job for name, job in jobs.items() if pulumi_step(job)[1]["with"]["command"] == "up"}
    assert list(ups) == ["up-dev"]
    job = ups["up-dev"]
    assert job["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert pulumi_step(job)[1]["with"]["stack-name"] == "dev"
    assert job["concurrency"]["cancel-in-progress"] is False


@pytest.mark.parametrize("job_name", ["preview", "up-dev"])
def test_python_and_the_requirements_come_before_pulumi(job_name: str) -> None:
    job = workflow()["jobs"][job_name]
    index, _ = pulumi_step(job)
    before = steps_of(job)[:index]
    assert any(str(s.get("uses", "")).startswith("actions/setup-python@") for s in before)
    install = "\n".join(str(s.get("run", "")) for s in before)
    # Into the virtualenv Pulumi.yaml names, which is where the program runs.
    runtime = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["runtime"]
    venv = runtime["options"]["virtualenv"]
    assert f"python -m venv {venv}" in install
    assert f"{venv}/bin/pip install -r requirements.txt" in install
    # scripts/check-stack-files picks ./.venv/bin/python by itself: the same virtualenv.
    assert venv == ".venv"


def test_state_backend_and_passphrase_come_from_secrets() -> None:
    env = workflow()["env"]
    assert env["PULUMI_BACKEND_URL"] == "${{ secrets.PULUMI_BACKEND_URL }}"
    assert env["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
    for job in workflow()["jobs"].values():
        assert pulumi_step(job)[1]["with"]["cloud-url"] == "${{ env.PULUMI_BACKEND_URL }}"


def test_every_secret_and_variable_the_workflow_reads_is_documented() -> None:
    text = PULUMI_WORKFLOW.read_text()
    names = set(re.findall(r"\b(?:secrets|vars)\.([A-Z_]+)", text)) - {"GITHUB_TOKEN"}
    assert names >= {"PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE"}
    documented = CI_DOC.read_text()
    missing = sorted(name for name in names if f"`{name}`" not in documented)
    assert missing == [], f"docs/ci.md does not list {missing}"


@pytest.mark.parametrize("job_name", ["preview", "up-dev"])
def test_the_stack_files_are_checked_before_pulumi(job_name: str) -> None:
    job = workflow()["jobs"][job_name]
    index, _ = pulumi_step(job)
    runs = [str(s.get("run", "")) for s in steps_of(job)]
    (check,) = [i for i, run in enumerate(runs) if run.strip() == "scripts/check-stack-files"]
    install = next(i for i, run in enumerate(runs) if "pip install -r requirements.txt" in run)
    assert install < check < index


def test_pulumi_yaml_and_pulumi_plugin_yaml_share_one_runtime_and_virtualenv() -> None:
    """One virtualenv for the tests (scripts/test), the program and the plugin: ./.venv."""
    program = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["runtime"]
    plugin = yaml.safe_load((ROOT / "PulumiPlugin.yaml").read_text())["runtime"]
    assert program == plugin
    assert program["options"]["virtualenv"] == ".venv"
    assert "python=.venv/bin/python" in (ROOT / "scripts" / "test").read_text()


# ---------------------------------------------------------------------------------------
# Stacks that are not configured yet are skipped, and the job says why
# ---------------------------------------------------------------------------------------


def configured_step(job: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    (found,) = [(i, s) for i, s in enumerate(steps_of(job)) if s.get("id") == "configured"]
    return found


@pytest.mark.parametrize("job_name", ["preview", "up-dev"])
def test_pulumi_runs_only_for_a_configured_stack(job_name: str) -> None:
    job = workflow()["jobs"][job_name]
    index, step = pulumi_step(job)
    check_index, check = configured_step(job)
    assert check_index < index
    assert step["if"] == "steps.configured.outputs.ready == 'true'"
    assert check["env"]["STACK"] == step["with"]["stack-name"]


def run_configured_step(tmp_path: Path, stack: str, cwd: Path = ROOT) -> tuple[subprocess.CompletedProcess, str]:
    """The step's own shell text, run as the runner runs it (bash -e, GITHUB_OUTPUT a file)."""
    output = tmp_path / "github_output"
    output.write_text("")
    script = configured_step(workflow()["jobs"]["preview"])[1]["run"]
    env = {**os.environ, "STACK": stack, "GITHUB_OUTPUT": str(output), "REGISTRY_STACK_PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    return result, output.read_text()


@pytest.mark.parametrize("stack", STACKS)
def test_a_committed_stack_without_users_is_skipped_with_a_notice(tmp_path: Path, stack: str) -> None:
    result, output = run_configured_step(tmp_path, stack)
    assert result.returncode == 0, result.stderr
    assert output == "ready=false\n"
    notice = f"::notice title=stack {stack} not yet configured::Pulumi.{stack}.yaml: registry-stack:users is missing"
    assert notice in result.stdout
    assert f"pulumi config set --stack {stack} --secret --path 'registry-stack:users[0]'" in result.stdout


def _project_copy(tmp_path: Path, stack_file: str) -> Path:
    project = tmp_path / "project"
    for part in ("scripts", "tools", "components"):
        shutil.copytree(ROOT / part, project / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "Pulumi.yaml", project)
    (project / "Pulumi.stage.yaml").write_text(stack_file)
    return project


def test_a_stack_with_encrypted_users_is_previewed(tmp_path: Path) -> None:
    project = _project_copy(tmp_path, (
        "config:\n  registry-stack:tlsMode: letsencrypt-staging\n  registry-stack:acmeEmail: ops@example.com\n"
        "  registry-stack:users:\n    - secure: v1:abc:def\n"
    ))
    result, output = run_configured_step(tmp_path, "stage", cwd=project)
    assert result.returncode == 0, result.stderr
    assert output == "ready=true\n" and "::notice" not in result.stdout


def test_a_letsencrypt_stack_without_acme_email_names_that_key(tmp_path: Path) -> None:
    project = _project_copy(tmp_path, (
        "config:\n  registry-stack:tlsMode: letsencrypt\n  registry-stack:users:\n    - secure: v1:abc:def\n"
    ))
    result, output = run_configured_step(tmp_path, "stage", cwd=project)
    assert output == "ready=false\n"
    assert "registry-stack:acmeEmail is missing" in result.stdout
    assert "pulumi config set --stack stage registry-stack:acmeEmail" in result.stdout


def test_a_broken_stack_file_fails_the_step_instead_of_skipping(tmp_path: Path) -> None:
    project = _project_copy(tmp_path, "config: [unclosed\n")
    result, output = run_configured_step(tmp_path, "stage", cwd=project)
    assert result.returncode != 0
    assert "ready=" not in output
