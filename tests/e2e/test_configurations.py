"""The two switches on a real engine: build only, cache only, neither.

("Both" is the walking skeleton itself, in test_walking_skeleton.py.)
"""

from __future__ import annotations

import docker

from testbed.clients import DockerCli, https, make_unique_image, pull_and_forget, push_unique_image, remove_local_image
from testbed.stack import realize, realized_stack


def _running_roles(client: docker.DockerClient, stack: str) -> set[str]:
    containers = client.containers.list(filters={"label": f"registry-stack.stack={stack}"})
    return {c.labels["registry-stack.role"] for c in containers}


def test_build_only_runs_build_and_front_and_takes_pushes(
    docker_client: docker.DockerClient, local_images: dict[str, str], docker_cli: DockerCli
) -> None:
    overrides = {"enableCache": False}
    with realized_stack(docker_client, stack="e2e-build-only", overrides=overrides) as (stack, _):
        assert _running_roles(docker_client, stack.stack) == {"build", "front"}
        assert stack.outputs["cacheUrl"] == ""
        assert stack.outputs["daemonJson"].strip() == "{}"

        tag = f"{stack.address('build')}/team/only-build:1"
        make_unique_image(tag)
        try:
            docker_cli.login(stack.address("build"), "admin", stack.password)
            docker_cli.run("push", tag)
        finally:
            remove_local_image(tag)
        tags = https(stack.url("build", "/v2/team/only-build/tags/list"), stack.ca_file, auth=("admin", stack.password))
        assert tags.json()["tags"] == ["1"]


def test_cache_only_needs_no_users_and_serves_pulls(
    docker_client: docker.DockerClient, local_images: dict[str, str], docker_cli: DockerCli
) -> None:
    overrides = {"enableBuild": False, "users": []}
    with realized_stack(docker_client, stack="e2e-cache-only", overrides=overrides) as (stack, upstream):
        assert upstream is not None
        assert _running_roles(docker_client, stack.stack) == {"cache", "cache-standby", "cache-herd", "agent", "front"}
        assert stack.outputs["buildUrl"] == "" and stack.outputs["dockerLogin"] == ""

        push_unique_image(docker_cli, f"{upstream.local_address}/library/only-cache:1")
        pull_and_forget(docker_cli, f"{stack.address('cache')}/library/only-cache:1")
        catalog = https(stack.url("cache", "/v2/_catalog"), stack.ca_file)
        assert "library/only-cache" in catalog.json()["repositories"]


def test_neither_creates_nothing_and_says_so(docker_client: docker.DockerClient, local_images: dict[str, str]) -> None:
    values = {"enableBuild": False, "enableCache": False, "domain": "dev.internal.network"}
    declaration, realized = realize(docker_client, values, (), "e2e-neither")
    assert realized.created == []
    assert not docker_client.containers.list(all=True, filters={"label": "registry-stack.stack=e2e-neither"})
    assert any("creates no containers" in line for line in declaration.logs)
    assert declaration.outputs["hostnames"] == []
