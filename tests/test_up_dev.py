"""scripts/up-dev, the one-command quickstart, against stand-in `pulumi` and `docker` CLIs.

The real Pulumi CLI cannot be installed here; the stand-ins record every call with the
environment the script gave it, so the test checks what the quickstart asks Pulumi to do.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UP_DEV = ROOT / "scripts" / "up-dev"

# A stand-in `pulumi` that answers `config get` as the real CLI does (pulumi/pulumi
# pkg/cmd/pulumi/config/config_get.go, read 2026-12):
# - the stack's config (Pulumi.<stack>.yaml here, plus what `config set` stored) is merged with
#   the project defaults of Pulumi.yaml first (workspace.ApplyProjectConfig,
#   sdk/go/common/workspace/config.go mergeConfig: a default array becomes an object value of
#   its compact JSON), so a key with a default is always found and the command exits 0;
# - `--json` prints configValueJSON indented by two spaces: "value" (the decrypted text; for
#   an object its JSON), "objectValue" (the parsed object, only for objects) and "secret"
#   (config.Value.Secure(): true when any element is encrypted);
# - a key that is neither set nor declared is an error: "configuration key '<key>' not found".
# `config set --secret --path 'users[0]' v` stores v encrypted as element 0 of the list.
FAKE_PULUMI = """#!PYTHON
import json, os, sys
import yaml
log = os.environ["FAKE_LOG"]
with open(log, "a") as handle:
    handle.write(json.dumps({
        "argv": sys.argv[1:],
        "backend": os.environ.get("PULUMI_BACKEND_URL"),
        "passphrase_file": os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"),
    }) + "\\n")
args = sys.argv[1:]
project = yaml.safe_load(open("Pulumi.yaml"))
name = project["name"]
state_file = os.environ["FAKE_STATE"]
state = json.load(open(state_file)) if os.path.exists(state_file) else {}


def option(flag):
    return args[args.index(flag) + 1] if flag in args else None


def full_key(key):
    return key if ":" in key else name + ":" + key


def stack_config(stack):
    # {key: (value, secure elements)} as the stack holds it, before the project's defaults.
    config = {}
    path = "Pulumi." + stack + ".yaml"
    if os.path.exists(path):
        for key, value in ((yaml.safe_load(open(path)) or {}).get("config") or {}).items():
            config[key] = (value, False)
    for key, (value, secure) in state.get(stack, {}).items():
        config[key] = (value, secure)
    return config


if args[:2] == ["config", "get"]:
    stack = option("--stack") or "dev"
    key = full_key(args[2])
    config = stack_config(stack)
    for declared, spec in project.get("config", {}).items():
        if full_key(declared) not in config and "default" in spec:
            config[full_key(declared)] = (spec["default"], False)
    if key not in config:
        print("error: configuration key '" + args[2] + "' not found for stack '" + stack + "'", file=sys.stderr)
        sys.exit(255)
    value, secure = config[key]
    is_object = not isinstance(value, (str, bool, int, float))
    raw = json.dumps(value, separators=(",", ":")) if is_object else (
        str(value).lower() if isinstance(value, bool) else str(value))
    if "--json" in args:
        shown = {"value": raw}
        if is_object:
            shown["objectValue"] = value
        shown["secret"] = secure
        print(json.dumps(shown, indent=2))
    else:
        print(raw)
    sys.exit(0)
if args[:2] == ["config", "set"]:
    stack = option("--stack") or "dev"
    path, value = args[-2], args[-1]
    assert "--path" in args and path.endswith("[0]"), args
    key = full_key(path[: -len("[0]")])
    values, _ = state.setdefault(stack, {}).get(key, ([], False))
    values = [value] + values[1:]
    state[stack][key] = (values, "--secret" in args)
    json.dump(state, open(state_file, "w"))
    sys.exit(0)
if args[:2] == ["stack", "output"]:
    outputs = {"hostsLine": "127.0.0.1 docker-build.dev.internal.network", "dockerLogin": "docker login x"}
    print(outputs.get(args[2], "{}"))
""".replace("PYTHON", sys.executable, 1)

FAKE_DOCKER = """#!/bin/sh
exit 0
"""


def _tool(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def run_up_dev(tmp_path: Path, script: Path = UP_DEV) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run the quickstart; the stand-in CLI keeps the stack's config in tmp_path between runs."""
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
        "FAKE_STATE": str(tmp_path / "stack-config.json"),
        # scripts/check-stack-files runs in this Python (it has PyYAML and the pulumi SDK).
        "REGISTRY_STACK_PYTHON": sys.executable,
    })
    result = subprocess.run([str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def test_first_run_creates_the_stack_a_secret_user_and_deploys_on_a_local_backend(tmp_path: Path) -> None:
    result, calls = run_up_dev(tmp_path)
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
    run_up_dev(tmp_path)
    passphrase = (tmp_path / "home" / ".registry-stack" / "passphrase").read_text()
    result, calls = run_up_dev(tmp_path)
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


def _stand_in(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _tool(bin_dir, "pulumi", FAKE_PULUMI)
    env = {"PATH": os.environ["PATH"], "FAKE_LOG": str(tmp_path / "log"), "FAKE_STATE": str(tmp_path / "state.json")}
    return subprocess.run(
        [str(bin_dir / "pulumi"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_the_stand_in_answers_a_fresh_stack_as_the_real_cli_does(tmp_path: Path) -> None:
    """Pulumi.yaml's default `[]` is found (exit 0): the old exit-code check never added a user."""
    plain = _stand_in(tmp_path, "config", "get", "users", "--stack", "dev")
    assert (plain.returncode, plain.stdout) == (0, "[]\n")
    shown = _stand_in(tmp_path, "config", "get", "users", "--stack", "dev", "--json")
    assert shown.returncode == 0
    assert shown.stdout == '{\n  "value": "[]",\n  "objectValue": [],\n  "secret": false\n}\n'
    # A value of the stack file wins over the default; a scalar has no objectValue.
    domain = _stand_in(tmp_path, "config", "get", "domain", "--stack", "dev", "--json")
    assert json.loads(domain.stdout) == {"value": "dev.internal.network", "secret": False}
    missing = _stand_in(tmp_path, "config", "get", "nosuchkey", "--stack", "dev")
    assert missing.returncode != 0 and "not found" in missing.stderr


def test_the_stand_in_keeps_a_secret_user(tmp_path: Path) -> None:
    _stand_in(tmp_path, "config", "set", "--stack", "dev", "--secret", "--path", "users[0]", "admin:pw-1234")
    shown = json.loads(_stand_in(tmp_path, "config", "get", "users", "--stack", "dev", "--json").stdout)
    assert shown == {"value": '["admin:pw-1234"]', "objectValue": ["admin:pw-1234"], "secret": True}


def test_the_password_of_an_existing_user_never_reaches_the_output(tmp_path: Path) -> None:
    run_up_dev(tmp_path)
    state = json.loads((tmp_path / "stack-config.json").read_text())
    (password_entry,) = state["dev"]["registry-stack:users"][0]
    result, _ = run_up_dev(tmp_path)
    assert result.returncode == 0, result.stderr
    assert password_entry.split(":", 1)[1] not in result.stdout + result.stderr


def test_a_plain_user_in_the_dev_stack_file_stops_before_pulumi_up(tmp_path: Path) -> None:
    """scripts/check-stack-files runs before `pulumi up`: a copy of the project with a dev stack
    file holding one encrypted and one plain user."""
    project = tmp_path / "project"
    for part in ("scripts", "tools", "components"):
        shutil.copytree(ROOT / part, project / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "Pulumi.yaml", project)
    (project / "Pulumi.dev.yaml").write_text(
        "config:\n  registry-stack:users:\n    - secure: v1:abc:def\n    - bob:plain-password-1\n"
    )
    result, calls = run_up_dev(tmp_path, script=project / "scripts" / "up-dev")
    assert result.returncode != 0
    assert "Pulumi.dev.yaml: entry 1 of registry-stack:users is plain text" in result.stderr
    assert "pulumi config set --stack dev --secret --path 'registry-stack:users[1]'" in result.stderr
    assert "plain-password-1" not in result.stdout + result.stderr
    assert not any(call["argv"][:1] == ["up"] for call in calls)
