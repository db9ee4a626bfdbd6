"""A `pulumi up` that cannot bring the stack to serving fails, on every run, until it serves.

Each test plays several `pulumi up`s of one stack against the state the earlier ones left
(testbed.realize.StatefulMocks, which behaves as the engine and pulumi-docker do: a missed
health wait leaves the container created-with-errors, and the next up only sends it an
empty update, without waiting). The verification container the program declares
(components/verification.py) runs for real on the stack's network each time.

Stacks `<E2E_STACK>-hw-up` and `<E2E_STACK>-hw-wait`, so parallel runs stay apart.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pulumi
import pytest

from components import verification
from testbed.clients import free_port
from testbed.realize import EngineState, MissedWaitError, play_up
from testbed.stack import e2e_values, remove_leftovers, secret_keys_of
from testbed.trust import served_certificate
from testbed.upstreams import start_standin_upstream

BASE = os.environ.get("E2E_STACK", "e2e")
WAIT_CAP = 20.0  # the declared wait_timeout (120 s), shortened: a first health check runs after 10 s


@pytest.fixture(autouse=True)
def quick_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks' retry budget, shortened like the waits (the production values are longer)."""
    monkeypatch.setattr(verification, "VERIFY_SECONDS", 6)
    monkeypatch.setattr(verification, "REQUEST_SECONDS", 3)


@contextlib.contextmanager
def stack_named(client: docker.DockerClient, suffix: str) -> Iterator[str]:
    stack = f"{BASE}-{suffix}"
    remove_leftovers(client, stack)
    try:
        yield stack
    finally:
        remove_leftovers(client, stack)


def values_for(stack: str, **overrides: Any) -> dict[str, Any]:
    return e2e_values("Pulumi.dev.yaml", {
        "httpsPort": free_port(),
        "users": [f"admin:{secrets.token_urlsafe(18)}"],
        "domain": f"{stack}.internal.network",
        **overrides,
    })


def health(client: docker.DockerClient, name: str) -> str:
    container = client.containers.get(name)
    return container.attrs["State"].get("Health", {}).get("Status") or container.status


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(1)


def ca_of(state: EngineState) -> str:
    (ca,) = [s.outputs["certPem"] for (typ, _), s in state.resources.items() if typ.endswith("SelfSignedCert")]
    return ca


def test_first_deploy_without_its_upstream_serves_build_and_front_and_fails_until_the_cache_follows(
    docker_client: docker.DockerClient, local_images: dict[str, str]
) -> None:
    alias = "hw-upstream"
    with stack_named(docker_client, "hw-up") as stack:
        prefix = f"registry-stack-{stack}"
        values = values_for(stack, upstreams=[f"docker=http://{alias}:5000"])
        state = EngineState()

        def up() -> tuple[BaseException | None, dict[str, tuple[int, str]]]:
            _, error, mocks = play_up(
                docker_client, state, values, secret_keys_of(values), stack, wait_timeout_cap=WAIT_CAP
            )
            return error, mocks.realized.runs

        # 1. The upstream is unreachable: the cache cannot start, and nothing waits for it.
        error, runs = up()
        assert isinstance(error, pulumi.RunError), error
        message = str(error)
        assert f"cache of docker (http://{alias}:5000)" in message and "restarts by itself" in message
        failures = [line for line in message.splitlines() if line.startswith("  - ")]
        assert len(failures) == 1 and "1 check(s)" in message, message  # only the cache
        # ...while the build registry, the standby and the front came up and serve.
        for role in ("build", "cache-standby", "front"):
            assert health(docker_client, f"{prefix}-{role}") == "healthy", role
        code, logs = runs[f"{prefix}-verify"]
        assert code == 1
        assert f"PASS front: https://docker-build.{stack}.internal.network" in logs
        assert f"PASS front: https://docker-cache.{stack}.internal.network" in logs, "the standby answers"
        certificate = served_certificate(values["httpsPort"], f"docker-build.{stack}.internal.network", ca_of(state))
        assert certificate.subject
        cache = docker_client.containers.get(f"{prefix}-cache")
        assert cache.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"

        # 2. The next pulumi up changes nothing and fails again: the cache still does not serve.
        error, _ = up()
        assert isinstance(error, pulumi.RunError) and f"cache of docker (http://{alias}:5000)" in str(error)
        assert state.step_of("registry-verify") == "replace"
        assert state.step_of("registry-cache") == "same" and state.step_of("registry-front") == "same"

        # 3. The upstream returns: the cache follows by itself, and the next pulumi up passes.
        start_standin_upstream(docker_client, prefix, f"{prefix}-upstream", alias, stack=stack)
        wait_for(lambda: health(docker_client, f"{prefix}-cache") == "healthy", 150,
                 "the cache to start by itself once its upstream answers")
        error, runs = up()
        assert error is None, error
        assert runs[f"{prefix}-verify"][0] == 0


def test_a_container_that_missed_its_wait_keeps_the_update_failing_until_it_serves(
    docker_client: docker.DockerClient, local_images: dict[str, str]
) -> None:
    with stack_named(docker_client, "hw-wait") as stack:
        prefix = f"registry-stack-{stack}"
        values = values_for(stack, enableCache=False)
        state = EngineState()
        hung: list[Any] = []

        def hang_the_build_registry(name: str, container: Any) -> None:
            if name == f"{prefix}-build" and not hung:
                container.pause()  # its process stops answering: the health check cannot pass
                hung.append(container)

        def up(**options: Any) -> BaseException | None:
            _, error, _ = play_up(
                docker_client, state, values, secret_keys_of(values), stack, wait_timeout_cap=WAIT_CAP, **options
            )
            return error

        try:
            # 1. The build registry misses its health wait: the update fails, the front
            #    (which depends on it) is not created, the container stays with init errors.
            error = up(after_start=hang_the_build_registry)
            assert isinstance(error, MissedWaitError) and f"{prefix}-build" in str(error)
            build = state.named("registry-build")
            assert build is not None and build.init_errors
            assert state.named("registry-front") is None and state.named("registry-verify") is None

            # 2. As the provider does, the next up sends the build registry an empty update
            #    (no wait) and goes on; only the verification sees that it still does not serve.
            error = up()
            assert state.step_of("registry-build") == "update" and not build.init_errors
            assert state.step_of("registry-front") == "create"
            assert isinstance(error, pulumi.RunError), error
            failures = [line for line in str(error).splitlines() if line.startswith("  - ")]
            assert len(failures) == 1 and failures[0].startswith("  - build registry"), error

            # 3. Once it answers, the next pulumi up passes.
            hung.pop().unpause()
            wait_for(lambda: health(docker_client, f"{prefix}-build") == "healthy", 60, "the build registry")
            assert up() is None
            assert state.step_of("registry-build") == "same"
        finally:
            for container in hung:
                with contextlib.suppress(docker.errors.APIError):
                    container.unpause()
