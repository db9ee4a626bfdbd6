"""DaemonMirror on this machine's own dockerd: the declared command, run for real.

The stack is realized with `mirrorHosts: ["local"]`. The realizer creates the containers
and the TLS material for real and records the DaemonMirror's `local.Command` (create,
delete, stdin) instead of running it, so the test decides when to run it, exactly as
pulumi-command would (`/bin/sh -c <command>`, the script on stdin):

1. before: `docker pull` of a Docker Hub name that only the stand-in upstream holds fails
   (Docker Hub is unreachable here, and the daemon knows no mirror);
2. the declared create (apply) points this dockerd at the cache and installs the CA;
3. the same `docker pull` succeeds, through the cache (its catalog now lists the image);
4. the declared delete (remove) brings /etc/docker/daemon.json back to its original bytes
   (or no file), takes the CA away, the daemon no longer uses the mirror, and dockerd kept
   running all along (same pid, the stack's containers never restarted).

/etc/docker/daemon.json is backed up and restored by a fixture whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import docker
import pytest

from testbed import stack as testbed_stack
from testbed.clients import DockerCli, https, make_unique_image, remove_local_image
from testbed.realize import RealizingMocks
from testbed.stack import realized_stack
from testbed.trust import CERTS_D
from tests.harness import unwrap

DAEMON_JSON = Path("/etc/docker/daemon.json")
STATE_FILE = Path("/var/lib/registry-stack/daemon-mirror-registry-stack-e2e-mirror.json")
LOCAL_COMMAND = "command:local:Command"


class CommandRecordingMocks(RealizingMocks):
    """Realizes the stack like RealizingMocks and keeps each local Command to run later."""

    recorded: ClassVar[list[dict[str, Any]]] = []

    def new_resource(self, args: Any) -> tuple[str, dict]:
        if args.typ != LOCAL_COMMAND:
            return super().new_resource(args)
        props = unwrap(args.inputs)
        unknown = sorted(set(props) - {"create", "delete", "stdin", "triggers"})
        if unknown:
            error = AssertionError(f"{LOCAL_COMMAND}: this test does not handle {unknown}")
            self.errors.append(error)
            raise error
        CommandRecordingMocks.recorded.append({"name": args.name, **props})
        return f"{args.name}-id", {**props, "stdout": "", "stderr": ""}


def run_like_pulumi_command(command: str, stdin: str) -> subprocess.CompletedProcess:
    """pulumi-command's local.Command: `/bin/sh -c <command>` with stdin."""
    return subprocess.run(["/bin/sh", "-c", command], input=stdin, capture_output=True, text=True, timeout=180)


def dockerd_pid() -> int:
    return int(subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=True).stdout.split()[0])


def daemon_mirrors() -> list[str]:
    result = subprocess.run(
        ["docker", "info", "--format", "{{json .RegistryConfig.Mirrors}}"],
        capture_output=True, text=True, check=True,
    )
    return json.loads(result.stdout) or []


def _reload_dockerd_with(config_bytes: bytes | None) -> None:
    """Put daemon.json back to `config_bytes` and make the running dockerd drop stray mirrors."""
    config = json.loads(config_bytes or b"{}") if (config_bytes or b"").strip() else {}
    config.setdefault("registry-mirrors", [])
    DAEMON_JSON.write_text(json.dumps(config))
    subprocess.run(["kill", "-HUP", str(dockerd_pid())], check=False)
    time.sleep(2)
    if config_bytes is None:
        DAEMON_JSON.unlink()
    else:
        DAEMON_JSON.write_bytes(config_bytes)


@pytest.fixture
def daemon_json_backup() -> Iterator[bytes | None]:
    """The original daemon.json bytes (None: no file); restored after the test whatever happens."""
    original = DAEMON_JSON.read_bytes() if DAEMON_JSON.exists() else None
    mirrors_before = daemon_mirrors()
    yield original
    current = DAEMON_JSON.read_bytes() if DAEMON_JSON.exists() else None
    if current != original or daemon_mirrors() != mirrors_before:
        with contextlib.suppress(Exception):
            _reload_dockerd_with(original)
    STATE_FILE.unlink(missing_ok=True)


def started_at(client: docker.DockerClient, names: list[str]) -> dict[str, str]:
    return {name: client.containers.get(name).attrs["State"]["StartedAt"] for name in names}


def test_daemon_mirror_points_this_dockerd_at_the_cache_and_back(
    docker_client: docker.DockerClient,
    local_images: dict[str, str],
    docker_cli: DockerCli,
    daemon_json_backup: bytes | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = daemon_json_backup
    monkeypatch.setattr(testbed_stack, "RealizingMocks", CommandRecordingMocks)
    CommandRecordingMocks.recorded = []
    overrides = {"mirrorHosts": ["local"], "domain": "e2e-mirror.internal.network"}
    with realized_stack(docker_client, stack="e2e-mirror", overrides=overrides) as (stack, upstream):
        assert upstream is not None
        (command,) = CommandRecordingMocks.recorded
        assert command["name"] == "registry-mirror-local-apply"
        cache_address = stack.address("cache")
        cache_url = f"https://{cache_address}"
        # The e2e helpers trust the CA for the test's own clients: for the cache, installing
        # it is the DaemonMirror's job, so take it away first.
        shutil.rmtree(CERTS_D / cache_address, ignore_errors=True)

        repository = f"library/daemon-mirror-{secrets.token_hex(4)}"
        name = f"{repository.removeprefix('library/')}:1"
        upstream_tag = f"{upstream.local_address}/{repository}:1"
        make_unique_image(upstream_tag, layers=2)
        docker_cli.run("push", upstream_tag)
        remove_local_image(upstream_tag)
        containers = sorted(stack.realized.containers)
        running_since = started_at(docker_client, containers)
        pid = dockerd_pid()

        try:
            # 1. Before: the daemon has no mirror for it, and Docker Hub is out of reach.
            before = docker_cli.run("pull", name, check=False)
            assert before.returncode != 0, before.stdout

            # 2. The DaemonMirror's apply, as pulumi-command runs it.
            applied = run_like_pulumi_command(command["create"], command["stdin"])
            assert applied.returncode == 0, applied.stderr
            report = json.loads(applied.stdout.strip().splitlines()[-1])
            assert report["daemon_check"] == f"dockerd lists {cache_url}"
            assert json.loads(DAEMON_JSON.read_text())["registry-mirrors"][-1] == cache_url
            assert (CERTS_D / cache_address / "ca.crt").read_text() == stack.ca_pem
            assert f"{cache_url}/" in daemon_mirrors()

            # Applying again changes nothing.
            again = run_like_pulumi_command(command["create"], command["stdin"])
            assert again.returncode == 0, again.stderr
            assert json.loads(again.stdout.strip().splitlines()[-1])["changed"] == []

            # 3. The same pull now succeeds, through the cache.
            pulled = docker_cli.run("pull", name)
            assert "Downloaded newer image" in pulled.stdout
            catalog = https(stack.url("cache", "/v2/_catalog"), stack.ca_file)
            assert repository in catalog.json()["repositories"]
        finally:
            remove_local_image(name)

        # 4. The DaemonMirror's remove: everything back, dockerd still running.
        removed = run_like_pulumi_command(command["delete"], command["stdin"])
        assert removed.returncode == 0, removed.stderr
        assert (DAEMON_JSON.read_bytes() if DAEMON_JSON.exists() else None) == original
        assert not (CERTS_D / cache_address).exists()
        assert not STATE_FILE.exists()
        assert f"{cache_url}/" not in daemon_mirrors()
        assert dockerd_pid() == pid and docker_client.ping()
        assert started_at(docker_client, containers) == running_since, "no container restarted"
        after = docker_cli.run("pull", name, check=False)
        assert after.returncode != 0, "without the mirror the image is out of reach again"


def test_the_recorder_refuses_what_it_cannot_run() -> None:
    """Guards the test above: a new Command property must not be silently dropped."""
    mocks = CommandRecordingMocks.__new__(CommandRecordingMocks)
    mocks.errors = []

    class Args:
        typ = LOCAL_COMMAND
        name = "x"
        inputs: ClassVar[dict[str, Any]] = {"create": "true", "environment": {"A": "1"}}

    with pytest.raises(AssertionError, match="environment"):
        mocks.new_resource(Args())
