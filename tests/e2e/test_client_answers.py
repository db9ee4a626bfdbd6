"""Answers a client can act on: an upstream that rate-limits, content nobody has, the front's own.

One stack for the module (`<E2E_STACK>-answers`) whose Docker Hub cache reads from a stand-in
that rate-limits like Docker Hub when told to (testbed/rate_limited_upstream.py).

- While the upstream rate-limits, what the cache holds still pulls by tag and by digest;
  what it does not hold fails at once with `429 TOOMANYREQUESTS` that says so (distribution
  alone answers `500 UNKNOWN`, or `404` for a tag).
- A manifest digest the upstream lacks is `404 MANIFEST_UNKNOWN` (distribution: `500 UNKNOWN`),
  so a client that asks before it pushes (oras) goes on to the front's `405` that names the
  build registry.
- The front's 401 carries one challenge, and it advertises no HTTP/3.
"""

from __future__ import annotations

import http.client
import os
import ssl
import time
from collections.abc import Iterator

import docker
import pytest

from testbed.clients import MANIFEST_TYPES, DockerCli, https, pull_and_forget, push_unique_image, remove_local_image
from testbed.rate_limited_upstream import RateLimitedUpstream, start_rate_limited_upstream
from testbed.stack import RealizedStack, realized_stack

Answers = tuple[RealizedStack, RateLimitedUpstream]
UNKNOWN_DIGEST = "sha256:" + "0" * 64


@pytest.fixture(scope="module")
def answers(docker_client: docker.DockerClient, local_images: dict[str, str]) -> Iterator[Answers]:
    stack_name = f"{os.environ.get('E2E_STACK', 'e2e')}-answers"
    box: list[RateLimitedUpstream] = []

    def start_hub(network: str) -> None:
        box.append(start_rate_limited_upstream(docker_client, network, stack_name, alias="hub"))

    overrides = {"upstreams": ["docker=http://hub:5000"]}
    try:
        with realized_stack(docker_client, stack_name, overrides=overrides, network_starters=[start_hub]) as (
            stack, _,
        ):
            yield stack, box[0]
    finally:
        for upstream in box:
            upstream.remove()


def _cache_one(stack: RealizedStack, hub: RateLimitedUpstream, cli: DockerCli, name: str) -> tuple[str, str]:
    """An image in the upstream, pulled once through the cache: (cache reference by tag, digest)."""
    push_unique_image(cli, f"{hub.seed_address}/library/{name}:1")
    reference = f"{stack.address('cache')}/library/{name}:1"
    pull_and_forget(cli, reference)
    manifest = https(stack.url("cache", f"/v2/library/{name}/manifests/1"), stack.ca_file,
                     headers={"Accept": MANIFEST_TYPES})
    assert manifest.status == 200, manifest
    return reference, manifest.headers["docker-content-digest"]


def _error_code(answer) -> str:  # type: ignore[no-untyped-def]
    return answer.json()["errors"][0]["code"]


@pytest.mark.parametrize("mode", ["pull-limit", "overall"])
def test_while_the_upstream_rate_limits_cached_images_pull_and_uncached_ones_say_why(
    answers: Answers, docker_cli: DockerCli, mode: str
) -> None:
    stack, hub = answers
    cached, digest = _cache_one(stack, hub, docker_cli, f"kept-{mode}")
    # In the upstream, never pulled through the cache:
    push_unique_image(docker_cli, f"{hub.seed_address}/library/fresh-{mode}:1")
    hub.limit(mode)
    try:
        assert digest in pull_and_forget(docker_cli, cached).stdout
        by_digest = cached.rsplit(":", 1)[0] + "@" + digest
        docker_cli.run("pull", by_digest)
        remove_local_image(by_digest)

        started = time.monotonic()
        refused = docker_cli.run("pull", f"{stack.address('cache')}/library/fresh-{mode}:1", check=False, timeout=60)
        elapsed = time.monotonic() - started
        assert refused.returncode != 0
        assert "toomanyrequests" in refused.stderr.lower(), refused.stderr
        assert "rate-limiting this cache" in refused.stderr, refused.stderr
        assert elapsed < 15, f"the refused pull took {elapsed:.1f}s"

        for method in ("GET", "HEAD"):
            answer = https(stack.url("cache", f"/v2/library/fresh-{mode}/manifests/1"), stack.ca_file,
                           method=method, headers={"Accept": MANIFEST_TYPES})
            assert answer.status == 429, (method, answer)
            assert answer.headers["docker-distribution-api-version"] == "registry/2.0"
            if method == "GET":
                assert _error_code(answer) == "TOOMANYREQUESTS"
                assert "upstreamCredentials" in answer.json()["errors"][0]["message"]
        if mode == "pull-limit":  # Docker Hub's own figures reach the client
            assert answer.headers["ratelimit-remaining"] == "0;w=21600"
    finally:
        hub.limit("open")
    # With the limit lifted, the image that was refused pulls.
    pull_and_forget(docker_cli, f"{stack.address('cache')}/library/fresh-{mode}:1")


def test_a_digest_nobody_has_is_manifest_unknown(answers: Answers) -> None:
    stack, _ = answers
    for method in ("GET", "HEAD"):
        answer = https(stack.url("cache", f"/v2/library/anything/manifests/{UNKNOWN_DIGEST}"), stack.ca_file,
                       method=method, headers={"Accept": MANIFEST_TYPES})
        assert answer.status == 404, (method, answer)
        if method == "GET":
            assert _error_code(answer) == "MANIFEST_UNKNOWN"
            assert "neither in the cache nor at the upstream" in answer.json()["errors"][0]["message"]
    tag = https(stack.url("cache", "/v2/library/anything/manifests/no-such-tag"), stack.ca_file,
                headers={"Accept": MANIFEST_TYPES})
    assert (tag.status, _error_code(tag)) == (404, "MANIFEST_UNKNOWN")


def test_a_client_that_asks_before_it_pushes_reaches_the_405_that_names_the_build_registry(answers: Answers) -> None:
    """What oras does (oras-go's `Push`: resolve the manifest, check each blob, then upload)."""
    stack, _ = answers
    base = "/v2/team/app"
    by_tag = https(stack.url("cache", f"{base}/manifests/1.0"), stack.ca_file, method="HEAD",
                   headers={"Accept": MANIFEST_TYPES})
    by_digest = https(stack.url("cache", f"{base}/manifests/{UNKNOWN_DIGEST}"), stack.ca_file, method="HEAD",
                      headers={"Accept": MANIFEST_TYPES})
    blob = https(stack.url("cache", f"{base}/blobs/{UNKNOWN_DIGEST}"), stack.ca_file, method="HEAD")
    assert (by_tag.status, by_digest.status, blob.status) == (404, 404, 404)
    upload = https(stack.url("cache", f"{base}/blobs/uploads/"), stack.ca_file, method="POST", data=b"")
    assert (upload.status, _error_code(upload)) == (405, "UNSUPPORTED")
    assert stack.address("build") in upload.json()["errors"][0]["message"]


def _raw_headers(stack: RealizedStack, role: str, path: str) -> tuple[int, list[tuple[str, str]]]:
    """Status and every header line as sent (urllib would merge repeated headers)."""
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    host = stack.address(role).rsplit(":", 1)[0]
    connection = http.client.HTTPSConnection(host, stack.https_port, context=context, timeout=30)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        answer.read()
        return answer.status, answer.getheaders()
    finally:
        connection.close()


def test_the_fronts_401_challenges_once_and_no_answer_advertises_http3(answers: Answers) -> None:
    stack, _ = answers
    status, headers = _raw_headers(stack, "build", "/v2/")
    assert status == 401
    challenges = [value for name, value in headers if name.lower() == "www-authenticate"]
    assert challenges == ['Basic realm="registry"'], headers
    for role, path in (("build", "/v2/"), ("cache", "/v2/"), ("cache", "/v2/library/x/manifests/1")):
        _, headers = _raw_headers(stack, role, path)
        assert not [name for name, _ in headers if name.lower() == "alt-svc"], (role, path, headers)
