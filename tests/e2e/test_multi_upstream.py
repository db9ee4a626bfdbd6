"""Several upstreams (one needs credentials) and the unified endpoint, on a real engine.

Stand-ins: `upstream` plays Docker Hub (the upstream named docker), `private-upstream`
is a registry that demands basic auth (like a private ghcr.io/quay.io org).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest

from testbed.clients import MANIFEST_TYPES, DockerCli, digest_in, https, pull_and_forget, push_unique_image
from testbed.stack import RealizedStack, realized_stack
from testbed.upstreams import StandinUpstream, start_token_auth_upstream
from testbed.verify import check_lines, run_verify

API_HEADER = "docker-distribution-api-version"
# The private stand-in's token grants pull on these names only (fixed: the stack is new each run).
PRIVATE_REPOSITORIES = ["org/private-app", "org/unified-app"]


@dataclass
class Multi:
    stack: RealizedStack
    hub: StandinUpstream
    private: StandinUpstream


@pytest.fixture(scope="module")
def multi(docker_client: docker.DockerClient, local_images: dict[str, str]) -> Iterator[Multi]:
    stack_name = "e2e-multi"
    robot = ("robot", secrets.token_urlsafe(12))
    private_box: list[StandinUpstream] = []

    def start_private(network: str) -> None:
        private_box.append(start_token_auth_upstream(
            docker_client, network, stack_name, "private-upstream", robot, PRIVATE_REPOSITORIES
        ))

    overrides = {
        "upstreams": ["docker=http://upstream:5000", "private=http://private-upstream:5000"],
        "upstreamCredentials": [f"private={robot[0]}:{robot[1]}"],
        "unifiedEndpoint": True,
    }
    with realized_stack(docker_client, stack_name, overrides=overrides, network_starters=[start_private]) as (
        stack, hub,
    ):
        assert hub is not None
        yield Multi(stack=stack, hub=hub, private=private_box[0])


def _only_upstream_has(cli: DockerCli, upstream: StandinUpstream, repository: str) -> str:
    """Push a unique image to a stand-in upstream and forget it locally; returns its digest."""
    return digest_in(push_unique_image(cli, f"{upstream.local_address}/{repository}:1", layers=2).stdout)


def _pull_and_forget(cli: DockerCli, reference: str) -> str:
    return pull_and_forget(cli, reference).stdout


def test_each_upstream_has_its_own_cache_hostname(multi: Multi) -> None:
    assert multi.stack.outputs["hostnames"] == [
        "docker-build.dev.internal.network",
        "docker-cache.dev.internal.network",
        "private-cache.dev.internal.network",
        "registry.dev.internal.network",
    ]
    roles = {c.labels["registry-stack.role"] for c in multi.stack.realized.containers.values()}
    assert {"cache", "cache-standby", "private-cache", "private-cache-standby"} <= roles


def test_pull_through_the_cache_of_each_upstream(multi: Multi, docker_cli: DockerCli) -> None:
    stack = multi.stack
    hub_repo, private_repo = f"library/hub-{secrets.token_hex(3)}", PRIVATE_REPOSITORIES[0]
    hub_digest = _only_upstream_has(docker_cli, multi.hub, hub_repo)
    private_digest = _only_upstream_has(docker_cli, multi.private, private_repo)

    assert hub_digest in _pull_and_forget(docker_cli, f"{stack.address('cache')}/{hub_repo}:1")
    # The private upstream demands credentials: the cache has them, the client needs none.
    private_address = f"private-cache.dev.internal.network:{stack.https_port}"
    fresh = DockerCli()  # no credentials at all
    try:
        assert private_digest in _pull_and_forget(fresh, f"{private_address}/{private_repo}:1")
    finally:
        fresh.cleanup()
    catalog = https(f"https://{private_address}/v2/_catalog", stack.ca_file)
    assert private_repo in catalog.json()["repositories"]
    hub_catalog = https(stack.url("cache", "/v2/_catalog"), stack.ca_file)
    assert private_repo not in hub_catalog.json()["repositories"]


def test_unified_endpoint_takes_pushes_and_serves_them(multi: Multi, docker_cli: DockerCli) -> None:
    stack = multi.stack
    unified = f"registry.dev.internal.network:{stack.https_port}"
    anonymous = https(f"https://{unified}/v2/", stack.ca_file)
    assert anonymous.status == 401 and anonymous.headers[API_HEADER] == "registry/2.0"

    docker_cli.login(unified, "admin", stack.password)
    tag = f"{unified}/team/app-{secrets.token_hex(3)}:1.0"
    digest = digest_in(push_unique_image(docker_cli, tag).stdout)
    assert digest in _pull_and_forget(docker_cli, tag)
    # It landed in the build registry.
    repository = tag.split("/", 1)[1].rsplit(":", 1)[0]
    tags = https(stack.url("build", f"/v2/{repository}/tags/list"), stack.ca_file, auth=("admin", stack.password))
    assert tags.json()["tags"] == ["1.0"]


def test_unified_endpoint_serves_docker_hub_names_and_other_upstreams(multi: Multi, docker_cli: DockerCli) -> None:
    stack = multi.stack
    unified = f"registry.dev.internal.network:{stack.https_port}"
    hub_repo, private_repo = f"library/uni-{secrets.token_hex(3)}", PRIVATE_REPOSITORIES[1]
    hub_digest = _only_upstream_has(docker_cli, multi.hub, hub_repo)
    private_digest = _only_upstream_has(docker_cli, multi.private, private_repo)

    docker_cli.login(unified, "admin", stack.password)
    # Not in the build registry: the build registry answers 404, Docker Hub's cache serves it.
    assert hub_digest in _pull_and_forget(docker_cli, f"{unified}/{hub_repo}:1")
    # <upstream>/<name> goes to that upstream's cache as <name>.
    assert private_digest in _pull_and_forget(docker_cli, f"{unified}/private/{private_repo}:1")
    manifest = https(
        f"https://{unified}/v2/private/{private_repo}/manifests/1", stack.ca_file,
        auth=("admin", stack.password), headers={"Accept": MANIFEST_TYPES},
    )
    assert manifest.status == 200 and manifest.headers["docker-content-digest"] == private_digest


@pytest.mark.parametrize("name", ["library/alpine", "private/org/app"])
def test_unified_endpoint_refuses_pushes_of_names_that_belong_to_an_upstream(multi: Multi, name: str) -> None:
    stack = multi.stack
    answer = https(
        f"https://registry.dev.internal.network:{stack.https_port}/v2/{name}/blobs/uploads/", stack.ca_file,
        method="POST", data=b"", auth=("admin", stack.password),
    )
    assert answer.status == 403
    assert answer.json()["errors"][0]["code"] == "DENIED"
    assert "belongs to the upstream" in answer.json()["errors"][0]["message"]


def test_verify_passes_on_every_registry_of_the_stack(multi: Multi, docker_cli: DockerCli, tmp_path) -> None:
    """scripts/verify walks the build registry, each cache and the unified endpoint."""
    stack = multi.stack
    build_tag = f"{stack.address('build')}/verify/multi-{secrets.token_hex(3)}:1"
    docker_cli.login(stack.address("build"), "admin", stack.password)
    push_unique_image(docker_cli, build_tag)
    hub_repo = f"library/verify-{secrets.token_hex(3)}"
    _only_upstream_has(docker_cli, multi.hub, hub_repo)
    _pull_and_forget(docker_cli, f"{stack.address('cache')}/{hub_repo}:1")
    _only_upstream_has(docker_cli, multi.private, PRIVATE_REPOSITORIES[0])
    _pull_and_forget(docker_cli, f"private-cache.dev.internal.network:{stack.https_port}/{PRIVATE_REPOSITORIES[0]}:1")

    build_image = build_tag.split("/", 1)[1]
    result = run_verify(
        stack, tmp_path,
        "--image", f"build={build_image}", "--image", f"unified={build_image}",
        "--image", f"cache={hub_repo}:1", "--image", f"private-cache={PRIVATE_REPOSITORIES[0]}:1",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    roles = {line.split()[1] for line in check_lines(result)}
    assert roles == {"build", "cache", "private-cache", "unified"}
    assert not [line for line in check_lines(result) if not line.startswith("PASS")]
