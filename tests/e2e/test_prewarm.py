"""Pre-warmed, pinned images on the engine: pulled during `up`, served with the upstream stopped.

One stack (E2E_STACK, else "e2e-prewarm") whose stand-in Docker Hub is seeded, before any
container of the stack starts, with a single-platform image, a two-platform manifest list
and an image pre-warmed unpinned; `prewarm` also names an image the upstream does not have.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest

from testbed.clients import MANIFEST_TYPES, https
from testbed.registry_http import Endpoint, SyntheticImage, pull_image, push_image, sha256_digest, synthetic_image
from testbed.stack import RealizedStack, realized_stack

MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
STATE = "/var/lib/registry/scheduler-state.json"


@dataclass
class Seeded:
    single: SyntheticImage
    platforms: tuple[SyntheticImage, SyntheticImage]
    unpinned: SyntheticImage
    list_body: bytes

    @property
    def list_digest(self) -> str:
        return sha256_digest(self.list_body)


def _manifest_list(platforms: tuple[SyntheticImage, ...]) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_LIST,
        "manifests": [
            {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": len(p.manifest),
             "digest": p.manifest_digest, "platform": {"architecture": arch, "os": "linux"}}
            for p, arch in zip(platforms, ("amd64", "arm64"), strict=True)
        ],
    }).encode()


def _seed(client: docker.DockerClient, upstream_name: str, seeded: Seeded) -> None:
    """Push the images into the stand-in upstream through its published port."""
    container = client.containers.get(upstream_name)
    port = container.attrs["NetworkSettings"]["Ports"]["5000/tcp"][0]["HostPort"]
    endpoint = Endpoint(f"http://127.0.0.1:{port}")
    push_image(endpoint, "library/warm-single", "1", seeded.single)
    push_image(endpoint, "library/warm-unpinned", "1", seeded.unpinned)
    for platform in seeded.platforms:
        push_image(endpoint, "library/warm-multi", platform.manifest_digest, platform)
    connection = endpoint.connect()
    try:
        connection.request("PUT", "/v2/library/warm-multi/manifests/1", body=seeded.list_body,
                           headers={"Content-Type": MANIFEST_LIST})
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 201, f"seeding the manifest list: HTTP {answer.status}"
    finally:
        connection.close()


@pytest.fixture(scope="module")
def warmed(docker_client: docker.DockerClient, local_images: dict[str, str]) -> Iterator[tuple[RealizedStack, Seeded]]:
    stack_name = os.environ.get("E2E_STACK", "e2e-prewarm")
    platforms = (synthetic_image([3000, 5000]), synthetic_image([4000]))
    seeded = Seeded(synthetic_image([2000, 6000]), platforms, synthetic_image([1000]), _manifest_list(platforms))
    upstream_name = f"registry-stack-{stack_name}-upstream"
    overrides = {"prewarm": [
        "docker=warm-single:1",  # a short name: library/warm-single
        "docker=library/warm-multi:1",
        f"docker=library/warm-single@{seeded.single.manifest_digest}",
        "docker=library/warm-unpinned:1;pin=false",
        "docker=library/never-pushed:1",
    ]}
    with realized_stack(
        docker_client, stack=stack_name, overrides=overrides,
        network_starters=[lambda network: _seed(docker_client, upstream_name, seeded)],
    ) as (stack, upstream):
        assert upstream is not None
        yield stack, seeded


def _wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


def _state_keys(container: docker.models.containers.Container) -> set[str]:
    result = container.exec_run(["cat", STATE])
    return set(json.loads(result.output or b"{}")) if result.exit_code == 0 else set()


def test_a_missing_image_is_a_warning_and_an_output_and_the_stack_serves(warmed: tuple[RealizedStack, Seeded]) -> None:
    stack, _ = warmed
    (failure,) = stack.outputs["prewarmFailures"]
    assert failure.startswith("docker=library/never-pushed:1: HTTP ")
    assert f"warn: pre-warm: {failure}" in stack.declaration.logs
    _, logs = stack.realized.runs[f"registry-stack-{stack.stack}-prewarm"]
    assert logs.count("PREWARMED ") == 4, logs
    assert "PREWARMED docker=library/warm-multi:1: " in logs and "3 manifest(s), 5 blob(s)" in logs
    assert https(stack.url("cache", "/v2/"), stack.ca_file).status == 200


def test_pinned_digests_leave_the_ttl_scheduler_when_the_cache_starts(
    warmed: tuple[RealizedStack, Seeded],
) -> None:
    stack, seeded = warmed
    cache = stack.container("cache")
    pins = cache.exec_run(["cat", "/etc/registry-stack/pins"]).output.decode()
    assert "library/warm-multi:1\n" in pins and "library/warm-unpinned" not in pins
    single = {f"library/warm-single@{b.digest}" for b in (*seeded.single.blobs,)} | {
        f"library/warm-single@{seeded.single.manifest_digest}"}
    multi = {f"library/warm-multi@{d}" for d in (seeded.list_digest, *(p.manifest_digest for p in seeded.platforms))}
    unpinned = f"library/warm-unpinned@{seeded.unpinned.manifest_digest}"
    # distribution schedules what it fetched from the upstream (and saves that every 5 s).
    _wait_for(lambda: _state_keys(cache) >= single | multi | {unpinned}, 30,
              "the proxy to schedule the pre-warmed digests")

    cache.restart(timeout=10)  # with the upstream up: the start script strips, then the registry starts
    _wait_for(lambda: cache.reload() or cache.attrs["State"].get("Health", {}).get("Status") == "healthy", 60,
              "the cache to serve again")
    after = _state_keys(cache)
    assert not after & (single | multi), "a pinned digest is still scheduled for expiry"
    assert unpinned in after, "an unpinned image must keep its TTL"
    assert "pinned, never expires: library/warm-multi@" in cache.logs(tail=200).decode(errors="replace")


def test_pre_warmed_images_pull_by_tag_and_digest_with_the_upstream_stopped(
    warmed: tuple[RealizedStack, Seeded], docker_client: docker.DockerClient,
) -> None:
    stack, seeded = warmed
    endpoint = Endpoint(f"https://{stack.address('cache')}", ca_file=str(stack.ca_file))
    upstream = docker_client.containers.get(f"registry-stack-{stack.stack}-upstream")
    upstream.stop(timeout=2)
    try:
        by_tag = pull_image(endpoint, "library/warm-single", "1")
        assert by_tag.blob_digests == [b.digest for b in seeded.single.blobs]
        pull_image(endpoint, "library/warm-single", seeded.single.manifest_digest)
        listed = https(stack.url("cache", "/v2/library/warm-multi/manifests/1"), stack.ca_file,
                       headers={"Accept": MANIFEST_TYPES})
        assert listed.status == 200 and listed.headers["docker-content-digest"] == seeded.list_digest
        for platform in seeded.platforms:  # every platform, not only the host's
            assert pull_image(endpoint, "library/warm-multi", platform.manifest_digest).blob_digests == [
                b.digest for b in platform.blobs]
    finally:
        upstream.start()
