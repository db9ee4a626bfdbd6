"""The verification every `pulumi up` ends with (components/verification.py).

Under mocks: the run-to-completion container the program declares, and what the program
does with the exit status pulumi-docker reports. For real: the generated script, run by
busybox sh with busybox wget (what the official registry image has) against local servers.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components import verification
from components.settings import load_settings
from components.verification import Target, failure_message, targets_for, verification_script
from tests.harness import Declaration, Mocks, declare

CONTAINER = "docker:index/container:Container"
COMMAND = "command:local:Command"
USERS = ["ci:Ci-Pa55word-7f3a"]


def declared(values: dict[str, Any] | None = None, **extra: Any) -> Declaration:
    return declare({"users": USERS, **(values or {})}, secret_keys=("users",), **extra)


def verifier(declaration: Declaration) -> Any:
    return declaration.containers["registry-stack-dev-verify"]


# ---------------------------------------------------------------------------------------
# What the program declares
# ---------------------------------------------------------------------------------------


def test_the_verification_runs_to_completion_on_the_stacks_network_after_every_container() -> None:
    declaration = declared()
    container = verifier(declaration)
    inputs = container.plain_inputs
    assert (inputs["attach"], inputs["logs"], inputs["mustRun"], inputs["restart"]) == (True, True, False, "no")
    assert "wait" not in inputs, "a run-to-completion container has no health to wait for"
    assert inputs["entrypoints"] == ["/bin/sh", "-c"]
    (script,) = inputs["command"]
    assert script.startswith("# registry-stack verification")
    registry_image = declaration.named("registry-registry-image").plain_inputs["name"]
    assert inputs["image"] == f"sha256:{hashlib.sha256(registry_image.encode()).hexdigest()}"  # harness.Mocks
    assert inputs["networksAdvanced"][0]["name"] == "registry-stack-dev"
    waits_for = {urn.rpartition("::")[2] for urn in container.options["dependencies"]}
    services = {r.name for r in declaration.of_type(CONTAINER) if r is not container}
    assert services == {
        "registry-build", "registry-cache", "registry-cache-standby", "registry-cache-herd", "registry-agent",
        "registry-front",
    }
    assert services <= waits_for
    assert container.options["deleteBeforeReplace"] is True  # its name is fixed


def test_every_program_run_gives_it_a_new_run_id_so_every_up_runs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    first = verifier(declared()).plain_inputs["envs"]
    assert declared().containers["registry-stack-dev-verify"].plain_inputs["envs"] == first  # same process
    # A `pulumi up` is a new process with a new id: `envs` differ, and pulumi-docker replaces
    # a container whose envs changed, so the container runs again.
    monkeypatch.setattr(verification, "RUN_ID", "0" * 32)
    again = verifier(declared()).plain_inputs["envs"]
    assert again == [f"{verification.RUN_ENV}={'0' * 32}"] and again != first


def test_caches_do_not_wait_for_health_the_others_do() -> None:
    declaration = declared({"upstreams": ["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io"]})
    waits = {name: inputs.get("wait") for name, r in declaration.containers.items()
             if not (inputs := r.plain_inputs).get("attach")}
    prefix = "registry-stack-dev-"
    assert waits == {
        f"{prefix}build": True, f"{prefix}front": True,
        f"{prefix}cache": False, f"{prefix}ghcr-cache": False,  # restart policy, not a wait
        f"{prefix}cache-standby": True, f"{prefix}ghcr-cache-standby": True,
        f"{prefix}agent": True,
        # the herd tiers start once their cache's name resolves: no wait either
        f"{prefix}cache-herd": False, f"{prefix}ghcr-cache-herd": False,
    }
    assert declaration.containers[f"{prefix}cache"].plain_inputs["restart"] == "unless-stopped"


def test_targets_name_every_registry_and_every_public_name() -> None:
    settings = load_settings(
        {"users": '["ci:Ci-Pa55word-7f3a"]', "upstreams": '["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io"]',
         "unifiedEndpoint": "true"},
        {"users"}, "dev",
    )
    targets = {t.name: (t.url, t.accept) for t in targets_for(settings)}
    prefix = "http://registry-stack-dev-"
    assert targets == {
        "build registry": (f"{prefix}build:5000/v2/", (200,)),
        "cache of docker (https://registry-1.docker.io)": (f"{prefix}cache:5000/v2/", (200,)),
        "standby of docker": (f"{prefix}cache-standby:5000/v2/", (200,)),
        "cache of ghcr (https://ghcr.io)": (f"{prefix}ghcr-cache:5000/v2/", (200,)),
        "standby of ghcr": (f"{prefix}ghcr-cache-standby:5000/v2/", (200,)),
        **{f"front: https://{name}": (f"https://{name}/v2/", accept) for name, accept in (
            ("docker-build.dev.internal.network", (401,)),
            ("docker-cache.dev.internal.network", (200, 403)),
            ("ghcr-cache.dev.internal.network", (200, 403)),
            ("registry.dev.internal.network", (401,)),
        )},
    }


def test_no_registry_no_verification() -> None:
    declaration = declared({"enableBuild": False, "enableCache": False})
    assert not declaration.of_type(CONTAINER)


# ---------------------------------------------------------------------------------------
# What the program does with the outcome
# ---------------------------------------------------------------------------------------


class ExitingMocks(Mocks):
    """pulumi-docker's answer for the attached container: its exit status and its output."""

    def __init__(self, exit_code: int, logs: str) -> None:
        self.exit_code, self.logs = exit_code, logs
        self.created: list[str] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self.created.append(args.typ)
        resource_id, outputs = super().new_resource(args)
        if args.typ == CONTAINER and args.inputs.get("attach") and not pulumi.runtime.is_dry_run():
            outputs.update(exitCode=self.exit_code, containerLogs=self.logs)
        return resource_id, outputs


FAILED_LOGS = (
    "PASS build registry: http://registry-stack-dev-build:5000/v2/ answers\n"
    "FAIL cache of docker (https://registry-1.docker.io): http://registry-stack-dev-cache:5000/v2/ does not "
    "answer 200 within 60 s (last answer: none): a cache cannot start while ...\n"
)


def test_a_stack_that_does_not_serve_fails_the_update_naming_what_and_points_no_host_at_it() -> None:
    mocks = ExitingMocks(1, FAILED_LOGS)
    with pytest.raises(pulumi.RunError) as raised:
        declared({"mirrorHosts": ["local"]}, mocks=mocks)
    message = str(raised.value)
    assert "does not serve yet" in message and "registry-stack-dev-verify" in message
    assert "cache of docker (https://registry-1.docker.io)" in message
    assert "build registry" not in message, "only what failed is listed"
    assert "Every pulumi up checks again" in message
    # The DaemonMirror waits for a passing verification: it never reaches the provider.
    assert COMMAND not in mocks.created
    assert mocks.created.count(CONTAINER) == 7  # build, cache, standby, herd, agent, front, verify


def test_a_passing_verification_lets_the_daemon_mirror_go_ahead() -> None:
    mocks = ExitingMocks(0, FAILED_LOGS.splitlines()[0])
    declaration = declared({"mirrorHosts": ["local"]}, mocks=mocks)
    (command,) = declaration.of_type(COMMAND)
    assert any(urn.endswith("::registry-verify") for urn in command.options["dependencies"])


def test_preview_does_not_know_the_outcome_and_does_not_fail() -> None:
    declaration = declared({"mirrorHosts": ["local"]}, preview=True, mocks=ExitingMocks(1, FAILED_LOGS))
    assert declaration.of_type(COMMAND), "the DaemonMirror still shows in the preview"


def test_failure_message_without_fail_lines_shows_the_end_of_the_output() -> None:
    message = failure_message("registry-stack-dev-verify", 127, "sh: wget: not found\n")
    assert "exit status 127" in message and "wget: not found" in message


# ---------------------------------------------------------------------------------------
# The script, run for real by busybox sh and busybox wget
# ---------------------------------------------------------------------------------------

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


@pytest.fixture
def busybox_path(tmp_path: Path) -> str:
    """A PATH with only busybox's sh, wget, sleep and kill, as in the official images."""
    if not os.path.exists(BUSYBOX):
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: busybox is needed (scripts/install-test-deps installs busybox-static)")
        pytest.skip("busybox is not installed (apt-get install busybox-static)")
    folder = tmp_path / "bin"
    folder.mkdir()
    for applet in ("sh", "wget", "sleep", "kill"):
        (folder / applet).symlink_to(BUSYBOX)
    return str(folder)


@pytest.fixture
def servers() -> Iterator[dict[str, str]]:
    """name -> base URL of local servers that answer 200, 401, 502, or hang."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            behaviour = self.server.behaviour  # type: ignore[attr-defined]
            if behaviour == "hang":
                time.sleep(90)  # far longer than the bound below: waiting for it would show
                return
            self.send_response(int(behaviour))
            self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    running = {}
    for behaviour in ("200", "401", "502", "hang"):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.behaviour = behaviour  # type: ignore[attr-defined]
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running[behaviour] = server
    yield {name: f"http://127.0.0.1:{server.server_port}/v2/" for name, server in running.items()}
    for server in running.values():
        server.shutdown()
        server.server_close()


def run_script(targets: list[Target], path: str, seconds: int = 4) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(
        [BUSYBOX, "sh", "-c", verification_script(targets, seconds)],
        capture_output=True, text=True, timeout=120, env={"PATH": path},
    )
    return result, time.monotonic() - started


def test_the_script_passes_when_everything_answers_as_expected(busybox_path: str, servers: dict[str, str]) -> None:
    targets = [Target("build registry", servers["200"], (200,), "h1"), Target("front: b", servers["401"], (401,), "h2")]
    result, elapsed = run_script(targets, busybox_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"PASS build registry: {servers['200']} answers", f"PASS front: b: {servers['401']} answers",
    ]
    assert elapsed < 3, "a passing check does not wait out the retries"


def test_the_script_fails_naming_each_target_that_does_not_answer(busybox_path: str, servers: dict[str, str]) -> None:
    gone = "http://127.0.0.1:9/v2/"  # the discard port: nothing listens
    targets = [
        Target("build registry", servers["200"], (200,), "fine"),
        Target("cache of docker (x)", gone, (200,), "its upstream may be down"),
        Target("front: c", servers["502"], (200, 403), "the front's log"),
        Target("front: b", servers["200"], (401,), "an open registry is not what we serve"),
    ]
    # 8 s, not less: on a loaded 2-core machine a first answer can take seconds to come.
    result, _ = run_script(targets, busybox_path, seconds=8)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"PASS build registry: {servers['200']} answers"
    assert lines[1] == (f"FAIL cache of docker (x): {gone} does not answer 200 within 8 s (last answer: none): "
                        "its upstream may be down")
    assert lines[2].startswith(f"FAIL front: c: {servers['502']} does not answer 200/403")
    assert "(last answer: 502)" in lines[2]
    assert "(last answer: 200)" in lines[3]
    message = failure_message("v", result.returncode, result.stdout)
    assert message.count("\n  - ") == 3 and "build registry" not in message


def test_a_hanging_answer_is_given_up_after_the_request_timeout(busybox_path: str, servers: dict[str, str]) -> None:
    result, elapsed = run_script([Target("slow", servers["hang"], (200,), "h")], busybox_path, seconds=2)
    assert result.returncode == 1 and "FAIL slow" in result.stdout
    # Generous slack: a loaded 2-core machine runs busybox slowly; a script that waited for
    # the answer would take the full 90 s.
    assert elapsed < verification.REQUEST_SECONDS + 30, elapsed
