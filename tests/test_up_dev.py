"""scripts/up-dev, the one-command quickstart, against stand-in `pulumi` and `docker` CLIs.

The real Pulumi CLI cannot be installed here; the stand-ins record every call with the
environment the script gave it, so the test checks what the quickstart asks Pulumi to do.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FAKE_PULUMI = """#!/usr/bin/env python3
import json, os, sys
log = os.environ["FAKE_LOG"]
with open(log, "a") as handle:
    handle.write(json.dumps({
        "argv": sys.argv[1:],
        "backend": os.environ.get("PULUMI_BACKEND_URL"),
        "passphrase_file": os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"),
    }) + "\\n")
args = sys.argv[1:]
if args[:2] == ["config", "get"]:
    sys.exit(0 if os.environ.get("FAKE_HAS_USERS") else 1)
if args[:2] == ["stack", "output"]:
    outputs = {"hostsLine": "127.0.0.1 docker-build.dev.internal.network", "dockerLogin": "docker login x"}
    print(outputs.get(args[2], "{}"))
"""

FAKE_DOCKER = """#!/bin/sh
exit 0
"""


def _tool(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def run_up_dev(tmp_path: Path, has_users: bool) -> tuple[subprocess.CompletedProcess, list[dict]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _tool(bin_dir, "pulumi", FAKE_PULUMI)
    _tool(bin_dir, "docker", FAKE_DOCKER)
    log = tmp_path / "calls.jsonl"
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith("PULUMI_")
    }
    env.update({
        "PATH": f"{bin_dir}:{env['PATH']}",
        "HOME": str(tmp_path / "home"),
        "FAKE_LOG": str(log),
        **({"FAKE_HAS_USERS": "1"} if has_users else {}),
    })
    result = subprocess.run(
        [str(ROOT / "scripts" / "up-dev")], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def test_first_run_creates_the_stack_a_secret_user_and_deploys_on_a_local_backend(tmp_path: Path) -> None:
    result, calls = run_up_dev(tmp_path, has_users=False)
    assert result.returncode == 0, result.stderr
    argvs = [call["argv"] for call in calls]
    assert argvs[0] == ["install"]
    assert argvs[1] == ["stack", "select", "--create", "dev"]
    set_user = next(a for a in argvs if a[:2] == ["config", "set"])
    assert set_user[:6] == ["config", "set", "--stack", "dev", "--secret", "--path"]
    assert set_user[6] == "users[0]" and set_user[7].startswith("admin:") and len(set_user[7]) > 20
    up = argvs.index(["up", "--stack", "dev", "--yes"])
    assert up > argvs.index(set_user)
    # No Pulumi Cloud: every call runs against the local file backend and passphrase file.
    home = tmp_path / "home" / ".registry-stack"
    assert {call["backend"] for call in calls} == {f"file://{home}/state"}
    passphrase = home / "passphrase"
    assert {call["passphrase_file"] for call in calls} == {str(passphrase)}
    assert stat.S_IMODE(passphrase.stat().st_mode) == 0o600 and len(passphrase.read_text().strip()) >= 32
    # The password never reaches the output.
    assert set_user[7].split(":", 1)[1] not in result.stdout + result.stderr
    assert "127.0.0.1 docker-build.dev.internal.network" in result.stdout


def test_second_run_keeps_the_users_and_the_passphrase(tmp_path: Path) -> None:
    run_up_dev(tmp_path, has_users=False)
    passphrase = (tmp_path / "home" / ".registry-stack" / "passphrase").read_text()
    result, calls = run_up_dev(tmp_path, has_users=True)
    assert result.returncode == 0, result.stderr
    second_run = calls[[c["argv"] for c in calls].index(["install"], 1):]
    assert not any(c["argv"][:2] == ["config", "set"] for c in second_run)
    assert (tmp_path / "home" / ".registry-stack" / "passphrase").read_text() == passphrase


@pytest.mark.parametrize("missing", ["pulumi", "docker"])
def test_a_missing_tool_stops_with_a_clear_message(tmp_path: Path, missing: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if missing != "pulumi":
        _tool(bin_dir, "pulumi", FAKE_PULUMI)
    if missing != "docker":
        _tool(bin_dir, "docker", FAKE_DOCKER)
    else:
        _tool(bin_dir, "docker", "#!/bin/sh\nexit 1\n")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "FAKE_LOG": str(tmp_path / "log")}
    result = subprocess.run(
        [str(ROOT / "scripts" / "up-dev")], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "up-dev:" in result.stderr and ("Pulumi CLI" in result.stderr or "Docker" in result.stderr)
