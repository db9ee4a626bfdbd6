"""The size cap (cacheMaxSize) on a real engine: past it, the least recently pulled image goes.

One stack with a cap of 2.5 MiB and a stand-in Docker Hub holding four images of unique,
incompressible layers: P (300 KiB, pinned) and A, B, C (900 KiB each). Pulled P, A, B, then
A again, then C, the cache holds 3 MiB: over the cap. The agent must remove B (the oldest
pull that is not pinned) and only B, cleanly: afterwards, with the upstream stopped, every
image that remains pulls by digest, through the cache and through its standby, and B does not.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest

from testbed.clients import (
    MANIFEST_TYPES,
    DockerCli,
    digest_in,
    make_unique_image,
    pull_and_forget,
    remove_local_image,
    wait_until,
)
from testbed.stack import RealizedStack, realized_stack
from testbed.upstreams import StandinUpstream

CAP = "2.5MiB"
KIB = 1024
SIZES = {"p": 300 * KIB, "a": 900 * KIB, "b": 900 * KIB, "c": 900 * KIB}
# Where the program uploads the cache's pins into the agent (components/agent.py pins_path).
PINS_FILE = "/etc/registry-stack/pins.d/docker"
V2 = "/registries/cache/docker/registry/v2"


@dataclass
class Seeded:
    digest: str  # the image's manifest
    layer: str  # its one layer blob


@dataclass
class Capped:
    stack: RealizedStack
    upstream: StandinUpstream
    images: dict[str, Seeded]


def _seed(cli: DockerCli, upstream: StandinUpstream, name: str, size: int) -> Seeded:
    tag = f"{upstream.local_address}/library/cap-{name}:1"
    make_unique_image(tag, layers=1, layer_bytes=size)
    try:
        digest = digest_in(cli.run("push", tag).stdout)
    finally:
        remove_local_image(tag)
    request = urllib.request.Request(
        f"http://{upstream.local_address}/v2/library/cap-{name}/manifests/{digest}", headers={"Accept": MANIFEST_TYPES}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        layers = json.loads(answer.read())["layers"]
    return Seeded(digest, layers[0]["digest"])


@pytest.fixture(scope="module")
def capped(docker_client: docker.DockerClient, local_images: dict[str, str]) -> Iterator[Capped]:
    stack_name = os.environ.get("E2E_STACK", "e2e-cachecap")
    with realized_stack(docker_client, stack_name, overrides={
        "cacheMaxSize": CAP, "enableBuild": False,
        # P is pinned the way a site pins: by `prewarm`. It is seeded after the stack is up, so
        # this up's pre-warm of it fails (a warning); the pin holds all the same.
        "prewarm": ["docker=library/cap-p:1"],
    }) as (
        stack, upstream,
    ):
        assert upstream is not None
        cli = DockerCli()
        try:
            images = {name: _seed(cli, upstream, name, size) for name, size in SIZES.items()}
        finally:
            cli.cleanup()
        yield Capped(stack, upstream, images)


# The agent's image has python3 and little else (no find).
_LIST_FILES = (
    "import json, os, sys\n"
    "root = sys.argv[1]\n"
    "print(json.dumps({os.path.relpath(os.path.join(d, n), root): os.path.getsize(os.path.join(d, n))\n"
    "                  for d, _, names in os.walk(root) for n in names}))\n"
)


def _stored_files(stack: RealizedStack) -> dict[str, int]:
    """Every file of the cache's storage and its size, as the agent sees it (paths under docker/registry/v2)."""
    result = stack.container("agent").exec_run(["python3", "-c", _LIST_FILES, V2])
    assert result.exit_code == 0, result.output
    files: dict[str, int] = json.loads(result.output)
    return files


def _holds(files: dict[str, int], repository: str, image: Seeded) -> dict[str, bool]:
    revision = f"repositories/{repository}/_manifests/revisions/sha256/{image.digest.split(':')[1]}/link"
    layer_hex = image.layer.split(":")[1]
    return {
        "manifest": revision in files,
        "tag": f"repositories/{repository}/_manifests/tags/1/current/link" in files,
        "layer link": f"repositories/{repository}/_layers/sha256/{layer_hex}/link" in files,
        "layer data": f"blobs/sha256/{layer_hex[:2]}/{layer_hex}/data" in files,
    }


def _pull(cli: DockerCli, reference: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        return cli.run("pull", reference, check=check, timeout=60)
    finally:
        remove_local_image(reference)


def test_past_the_cap_the_oldest_pull_goes_and_what_remains_pulls_by_digest_while_the_upstream_is_down(
    capped: Capped, docker_client: docker.DockerClient, docker_cli: DockerCli
) -> None:
    stack, upstream, images = capped.stack, capped.upstream, capped.images
    cache = stack.address("cache")
    pins = stack.container("agent").exec_run(["cat", PINS_FILE])
    assert pins.exit_code == 0 and "library/cap-p:1" in pins.output.decode().splitlines(), pins.output

    for name in ("p", "a", "b", "a", "c"):  # A again: more recent than B
        pull_and_forget(docker_cli, f"{cache}/library/cap-{name}:1")
        time.sleep(1.1)  # the access log's times tell the pulls apart

    def evicted() -> list[str]:
        logs = stack.container("agent").logs().decode(errors="replace")
        removed = [line for line in logs.splitlines() if "evict: docker: removing" in line]
        assert removed, "no eviction yet"
        return removed

    removed = wait_until(evicted, 60, "the agent to evict past the cap", interval=1)
    assert len(removed) == 1 and f"library/cap-b@{images['b'].digest}" in removed[0], removed

    files = _stored_files(stack)
    assert _holds(files, "library/cap-b", images["b"]) == dict.fromkeys(("manifest", "tag", "layer link", "layer data"),
                                                                        False)
    for name in ("p", "a", "c"):
        assert all(_holds(files, f"library/cap-{name}", images[name]).values()), (name, files)
    assert sum(files.values()) <= 2.5 * 1024 * KIB, sum(files.values())

    upstream_container = docker_client.containers.get(upstream.name)
    upstream_container.stop(timeout=2)
    cache_container = stack.container("cache")
    try:
        for name in ("p", "a", "c"):
            _pull(docker_cli, f"{cache}/library/cap-{name}@{images[name].digest}")
        gone = _pull(docker_cli, f"{cache}/library/cap-b@{images['b'].digest}", check=False)
        assert gone.returncode != 0, gone.stdout

        # The standby (the cache itself down, as after a restart in an outage) serves the same.
        cache_container.stop(timeout=5)
        standby_logs_before = len(stack.container("cache-standby").logs())
        for name in ("p", "a", "c"):
            _pull(docker_cli, f"{cache}/library/cap-{name}@{images[name].digest}")
        assert "/v2/library/cap-c/manifests/" in stack.container("cache-standby").logs()[standby_logs_before:].decode(
            errors="replace")
        assert _pull(docker_cli, f"{cache}/library/cap-b@{images['b'].digest}", check=False).returncode != 0
    finally:
        upstream_container.start()
        cache_container.start()
