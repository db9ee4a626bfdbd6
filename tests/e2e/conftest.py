"""Fixtures for the e2e suite: a real Docker engine, local images, realized stacks.

Without a Docker engine the suite is skipped on a developer machine, and FAILS when
CI=true: CI must prove the stack on a real engine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import docker
import pytest

from testbed import images
from testbed.clients import DockerCli
from testbed.stack import RealizedStack, realized_stack
from testbed.upstreams import StandinUpstream


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except Exception as error:
        message = f"no Docker engine reachable ({error}); start dockerd (see .ci/run)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires the e2e suite: {message}")
        pytest.skip(message)
    return client


@pytest.fixture(scope="session")
def local_images(docker_client: docker.DockerClient) -> dict[str, str]:
    """Built once per run (and reused across runs while the Debian binaries are unchanged)."""
    return images.build_all()


@pytest.fixture(scope="session")
def skeleton(
    docker_client: docker.DockerClient, local_images: dict[str, str]
) -> Iterator[tuple[RealizedStack, StandinUpstream]]:
    """The dev stack (build + cache + front, self-signed TLS) with a stand-in Docker Hub."""
    # E2E_STACK lets two suites share one engine (each realizes its own stack).
    with realized_stack(docker_client, stack=os.environ.get("E2E_STACK", "e2e")) as (stack, upstream):
        assert upstream is not None
        yield stack, upstream


@pytest.fixture
def docker_cli() -> Iterator[DockerCli]:
    cli = DockerCli()
    yield cli
    cli.cleanup()


# The host bed (tests/e2e/hosts.py): real Docker 28/26, containerd and podman hosts.
from tests.e2e.host_stack import host_machines, host_network, hosts_stack  # noqa: E402, F401
