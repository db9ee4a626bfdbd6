"""The original write-up's validation, against the dev stack realized on a real engine.

Every HTTPS request here verifies the front's certificate against the stack's own CA
(the `caCertPem` output) and nothing else. The Docker client runs with its own config
folder, so credentials come only from the `docker login` each test performs.
"""

from __future__ import annotations

import secrets

import pytest

from testbed.clients import (
    MANIFEST_TYPES,
    DockerCli,
    https,
    make_unique_image,
    push_unique_image,
    remove_local_image,
    upload_blob_streaming,
)
from testbed.stack import RealizedStack
from testbed.upstreams import StandinUpstream

API_HEADER = "docker-distribution-api-version"
Skeleton = tuple[RealizedStack, StandinUpstream]


def _unique(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}"


def test_the_declared_containers_run_with_restart_policy_and_health(skeleton: Skeleton) -> None:
    stack, _ = skeleton
    for role in ("build", "cache", "front"):
        container = stack.container(role)
        container.reload()
        assert container.status == "running"
        assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert container.attrs["State"]["Health"]["Status"] == "healthy"


def test_build_v2_challenges_anonymous_clients_and_answers_users(skeleton: Skeleton) -> None:
    stack, _ = skeleton
    anonymous = https(stack.url("build", "/v2/"), stack.ca_file)
    assert anonymous.status == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert anonymous.headers[API_HEADER] == "registry/2.0"
    assert anonymous.json()["errors"][0]["code"] == "UNAUTHORIZED"

    wrong = https(stack.url("build", "/v2/"), stack.ca_file, auth=("admin", "not-the-password"))
    assert wrong.status == 401

    user = https(stack.url("build", "/v2/"), stack.ca_file, auth=("admin", stack.password))
    assert user.status == 200
    assert user.headers[API_HEADER] == "registry/2.0"


def test_cache_v2_is_anonymous(skeleton: Skeleton) -> None:
    stack, _ = skeleton
    answer = https(stack.url("cache", "/v2/"), stack.ca_file)
    assert answer.status == 200
    assert answer.headers[API_HEADER] == "registry/2.0"


def test_push_to_build_then_catalog_tags_and_manifest(
    skeleton: Skeleton, docker_cli: DockerCli
) -> None:
    stack, _ = skeleton
    repository = _unique("team/app")
    tag = f"{stack.address('build')}/{repository}:1.0"
    make_unique_image(tag, layers=1)
    try:
        docker_cli.login(stack.address("build"), "admin", stack.password)
        pushed = docker_cli.run("push", tag)
        digest = next(word for word in pushed.stdout.split() if word.startswith("sha256:"))
    finally:
        remove_local_image(tag)

    auth = ("admin", stack.password)
    catalog = https(stack.url("build", "/v2/_catalog"), stack.ca_file, auth=auth)
    assert catalog.status == 200 and repository in catalog.json()["repositories"]
    tags = https(stack.url("build", f"/v2/{repository}/tags/list"), stack.ca_file, auth=auth)
    assert tags.json() == {"name": repository, "tags": ["1.0"]}
    manifest = https(
        stack.url("build", f"/v2/{repository}/manifests/1.0"), stack.ca_file, auth=auth,
        headers={"Accept": MANIFEST_TYPES},
    )
    assert manifest.status == 200
    assert manifest.headers["docker-content-digest"] == digest

    # And it pulls back: a fresh client logs in and gets the same image.
    pulled = docker_cli.run("pull", tag)
    assert digest in pulled.stdout
    remove_local_image(tag)


def test_pull_through_cache_of_an_image_only_upstream_has(
    skeleton: Skeleton, docker_cli: DockerCli
) -> None:
    stack, upstream = skeleton
    repository = f"library/{_unique('standin')}"
    upstream_tag = f"{upstream.local_address}/{repository}:3.18"
    make_unique_image(upstream_tag, layers=2)
    docker_cli.run("push", upstream_tag)
    remove_local_image(upstream_tag)  # the layers must now come through the cache

    cache_tag = f"{stack.address('cache')}/{repository}:3.18"
    try:
        pulled = docker_cli.run("pull", cache_tag)
        assert "Downloaded newer image" in pulled.stdout
    finally:
        remove_local_image(cache_tag)

    catalog = https(stack.url("cache", "/v2/_catalog"), stack.ca_file)
    assert repository in catalog.json()["repositories"]
    tags = https(stack.url("cache", f"/v2/{repository}/tags/list"), stack.ca_file)
    assert "3.18" in tags.json()["tags"]
    manifest = https(
        stack.url("cache", f"/v2/{repository}/manifests/3.18"), stack.ca_file, headers={"Accept": MANIFEST_TYPES}
    )
    assert manifest.status == 200
    # The cache serves the upstream's manifest, byte for byte (same digest).
    upstream_manifest = https(
        f"http://{upstream.local_address}/v2/{repository}/manifests/3.18", stack.ca_file,
        headers={"Accept": MANIFEST_TYPES},
    )
    assert manifest.headers["docker-content-digest"] == upstream_manifest.headers["docker-content-digest"]


def test_push_to_cache_is_refused_with_a_registry_error(
    skeleton: Skeleton, docker_cli: DockerCli
) -> None:
    stack, _ = skeleton
    answer = https(stack.url("cache", "/v2/team/app/blobs/uploads/"), stack.ca_file, method="POST", data=b"")
    assert answer.status == 405
    assert answer.headers[API_HEADER] == "registry/2.0"
    error = answer.json()["errors"][0]
    assert error["code"] == "UNSUPPORTED"
    assert stack.address("build") in error["message"]

    refused = push_unique_image(docker_cli, f"{stack.address('cache')}/{_unique('team/app')}:1.0", check=False)
    assert refused.returncode != 0


@pytest.mark.parametrize("credentials", [None, ("admin", "wrong-password-123")], ids=["anonymous", "wrong-password"])
def test_push_to_build_without_valid_credentials_is_refused(
    skeleton: Skeleton, docker_cli: DockerCli, credentials: tuple[str, str] | None
) -> None:
    stack, _ = skeleton
    answer = https(
        stack.url("build", "/v2/team/app/blobs/uploads/"), stack.ca_file, method="POST", data=b"", auth=credentials
    )
    assert answer.status == 401
    assert answer.headers[API_HEADER] == "registry/2.0"

    if credentials:
        login = docker_cli.login(stack.address("build"), *credentials, check=False)
        assert login.returncode != 0
    refused = push_unique_image(docker_cli, f"{stack.address('build')}/{_unique('team/app')}:1.0", check=False)
    assert refused.returncode != 0
    assert "basic auth credentials" in refused.stderr or "unauthorized" in refused.stderr.lower()


def test_a_layer_over_one_gigabyte_streams_through_the_front(skeleton: Skeleton) -> None:
    """No body-size limit and no timeout in the front: a 1.1 GiB blob upload completes."""
    stack, _ = skeleton
    auth = ("admin", stack.password)
    repository = _unique("big/layer")
    size = 1100 * 1024 * 1024
    digest, uploaded = upload_blob_streaming(stack, repository, size, auth)
    assert uploaded == size
    head = https(stack.url("build", f"/v2/{repository}/blobs/{digest}"), stack.ca_file, method="HEAD", auth=auth)
    assert head.status == 200
    assert int(head.headers["content-length"]) == size
