"""Faults: the upstream goes away, containers are killed, the registry image is upgraded.

One stack ("e2e-faults") for the module, apart from the walking skeleton, because these
tests break things on purpose.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import docker
import pytest

from testbed.clients import (
    MANIFEST_TYPES,
    DockerCli,
    digest_in,
    https,
    pull_and_forget,
    push_unique_image,
    remove_local_image,
)
from testbed.stack import RealizedStack, realized_stack, update_stack
from testbed.upstreams import StandinUpstream

Faults = tuple[RealizedStack, StandinUpstream]


@pytest.fixture(scope="module")
def faults(docker_client: docker.DockerClient, local_images: dict[str, str]) -> Iterator[Faults]:
    with realized_stack(docker_client, stack="e2e-faults") as (stack, upstream):
        assert upstream is not None
        yield stack, upstream


def _cache_through(stack: RealizedStack, upstream: StandinUpstream, cli: DockerCli, name: str) -> tuple[str, str]:
    """Put an image in the upstream only, pull it once through the cache; (cache tag, digest)."""
    push_unique_image(cli, f"{upstream.local_address}/library/{name}:1", layers=2)
    cache_tag = f"{stack.address('cache')}/library/{name}:1"
    pull_and_forget(cli, cache_tag)
    manifest = https(
        stack.url("cache", f"/v2/library/{name}/manifests/1"), stack.ca_file, headers={"Accept": MANIFEST_TYPES}
    )
    return cache_tag, manifest.headers["docker-content-digest"]


def _wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _is_serving(container) -> bool:  # type: ignore[no-untyped-def]
    container.reload()
    return container.status == "running" and container.attrs["State"].get("Health", {}).get("Status") == "healthy"


def test_cached_images_pull_while_upstream_is_down_even_after_the_cache_restarts(
    faults: Faults, docker_client: docker.DockerClient, docker_cli: DockerCli
) -> None:
    stack, upstream = faults
    cache_tag, digest = _cache_through(stack, upstream, docker_cli, "outage")
    upstream_container = docker_client.containers.get(upstream.name)
    upstream_container.stop(timeout=2)
    cache = stack.container("cache")
    standby = stack.container("cache-standby")
    try:
        cache.reload()
        restarts = cache.attrs["RestartCount"]
        cache.restart(timeout=5)
        # The trap is real: with its upstream gone, the proxy cache exits at start-up.
        _wait_for(
            lambda: cache.reload() or cache.attrs["RestartCount"] > restarts, 30,
            "the cache to crash at start-up without its upstream",
        )

        pulled = docker_cli.run("pull", cache_tag)
        assert digest in pulled.stdout
        # ...and it was the standby that served it.
        assert "/v2/library/outage/manifests/1" in standby.logs(tail=200).decode(errors="replace")
        remove_local_image(cache_tag)
        by_digest = cache_tag.rsplit(":", 1)[0] + "@" + digest
        docker_cli.run("pull", by_digest)
        remove_local_image(by_digest)

        started = time.monotonic()
        missing = docker_cli.run("pull", f"{stack.address('cache')}/library/never-cached:1", check=False, timeout=60)
        elapsed = time.monotonic() - started
        assert missing.returncode != 0
        assert "not found" in missing.stderr.lower() or "unknown" in missing.stderr.lower()
        assert elapsed < 30, f"an uncached pull took {elapsed:.1f}s to fail"
    finally:
        upstream_container.start()
    # With the upstream back, the restart policy brings the cache itself back.
    _wait_for(lambda: _is_serving(cache), 90, "the cache to recover after the upstream returned")


@pytest.mark.parametrize("role", ["build", "cache", "cache-standby", "front"])
def test_kill_9_brings_the_container_back_with_its_content(
    faults: Faults, docker_client: docker.DockerClient, docker_cli: DockerCli, role: str
) -> None:
    stack, upstream = faults
    auth = ("admin", stack.password)
    pushed = f"{stack.address('build')}/team/survivor-{role}:1"
    docker_cli.login(stack.address("build"), *auth)
    push_unique_image(docker_cli, pushed)
    cache_tag, digest = _cache_through(stack, upstream, docker_cli, f"survivor-{role}")

    container = stack.container(role)
    container.reload()
    pid = container.attrs["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)  # a crash, not `docker stop`: the restart policy applies
    _wait_for(lambda: container.reload() or container.attrs["State"]["Pid"] not in (0, pid), 30, f"{role} to restart")
    _wait_for(lambda: _is_serving(container), 60, f"{role} to be healthy again")

    pull_and_forget(docker_cli, pushed)
    assert digest in pull_and_forget(docker_cli, cache_tag).stdout


def test_upgrading_the_registry_image_replaces_containers_and_keeps_every_image(
    faults: Faults, docker_client: docker.DockerClient, docker_cli: DockerCli, local_images: dict[str, str]
) -> None:
    stack, upstream = faults
    auth = ("admin", stack.password)
    pushed = f"{stack.address('build')}/team/before-upgrade:1"
    docker_cli.login(stack.address("build"), *auth)
    digest = digest_in(push_unique_image(docker_cli, pushed).stdout)
    cache_tag, cache_digest = _cache_through(stack, upstream, docker_cli, "before-upgrade")
    old_ids = {role: stack.container(role).id for role in ("build", "cache", "front")}

    # A "new" registry image: same binary under another tag, as a version bump would be.
    upgraded = "registry-stack-local/registry:2.8.2-upgrade"
    docker_client.images.get(local_images["registry"]).tag(upgraded)
    try:
        update_stack(docker_client, stack, {"registryImage": upgraded})
        for role in ("build", "cache"):
            container = stack.container(role)
            assert container.id != old_ids[role], f"{role} was not replaced"
            assert container.image.tags and upgraded in container.image.tags
            _wait_for(lambda c=container: _is_serving(c), 60, f"{role} to serve after the upgrade")

        by_digest = f"{stack.address('build')}/team/before-upgrade@{digest}"
        docker_cli.run("pull", by_digest)
        remove_local_image(by_digest)
        cached_by_digest = cache_tag.rsplit(":", 1)[0] + "@" + cache_digest
        docker_cli.run("pull", cached_by_digest)
        remove_local_image(cached_by_digest)
    finally:
        update_stack(docker_client, stack, {"registryImage": local_images["registry"]})
        docker_client.images.remove(upgraded)
