"""components/naming.py: every name the stack gives, and that the program uses only those."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from components import naming
from components.naming import Names
from tests.harness import declare

PASSWORD = "Ci-Pa55word-7f3a"
CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
NETWORK = "docker:index/network:Network"
COMMAND = "command:local:Command"


@dataclass(frozen=True)
class Upstream:
    name: str


# -- the pure functions ------------------------------------------------------------------


def test_docker_objects_share_the_stack_prefix() -> None:
    names = Names("prod", "example.org")
    assert names.prefix == names.network == "registry-stack-prod"
    assert names.container("build") == "registry-stack-prod-build"
    assert names.container(naming.standby_role("ghcr")) == "registry-stack-prod-ghcr-cache-standby"
    assert names.volume("front") == "registry-stack-prod-front-data"
    assert names.dial("cache", 5000) == "registry-stack-prod-cache:5000"


def test_roles_docker_hub_is_plain_cache() -> None:
    assert (naming.cache_role("docker"), naming.standby_role("docker")) == ("cache", "cache-standby")
    assert (naming.cache_role("ghcr"), naming.standby_role("ghcr")) == ("ghcr-cache", "ghcr-cache-standby")


def test_public_hostnames() -> None:
    names = Names("dev", "dev.internal.network")
    assert names.build_hostname == naming.build_hostname("dev.internal.network") == "docker-build.dev.internal.network"
    assert names.cache_hostname("docker") == "docker-cache.dev.internal.network"
    assert names.cache_hostname("quay") == "quay-cache.dev.internal.network"
    assert names.unified_hostname == "registry.dev.internal.network"


@pytest.mark.parametrize(
    ("port", "address", "url"),
    [
        (443, "docker-build.x.example", "https://docker-build.x.example"),
        (8443, "docker-build.x.example:8443", "https://docker-build.x.example:8443"),
    ],
)
def test_urls_and_addresses_name_the_port_only_when_it_is_not_443(port: int, address: str, url: str) -> None:
    names = Names("dev", "x.example", port)
    assert names.address(names.build_hostname) == address
    assert names.url(names.build_hostname) == url


@pytest.mark.parametrize(
    ("listed", "hub", "primary"),
    [
        (["docker", "ghcr"], "docker", "docker"),
        (["ghcr", "docker"], "docker", "docker"),  # Docker Hub wins wherever it is listed
        (["ghcr", "quay"], None, "ghcr"),  # no Docker Hub: the first cache
        ([], None, None),
    ],
)
def test_primary_cache_is_docker_hub_else_the_first(listed: list[str], hub: str | None, primary: str | None) -> None:
    upstreams = [Upstream(name) for name in listed]
    assert (naming.docker_hub(upstreams) or Upstream("")).name == (hub or "")
    assert (naming.primary(upstreams) or Upstream("")).name == (primary or "")


# -- the program uses these names --------------------------------------------------------


def test_every_docker_object_is_named_by_naming() -> None:
    declaration = declare({
        "users": [f"ci:{PASSWORD}"],
        "upstreams": ["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io"],
        "unifiedEndpoint": True,
    }, secret_keys=("users",), stack="stage")
    names = Names("stage", "stage.internal.network")
    roles = ["build", "cache", "cache-standby", "cache-herd", "ghcr-cache", "ghcr-cache-standby", "ghcr-cache-herd",
             "front"]
    containers = {r.plain_inputs["name"]: r.plain_inputs for r in declaration.of_type(CONTAINER)}
    # ...the agent, and the run-to-completion verification (components/verification.py).
    assert set(containers) == {names.container(role) for role in [*roles, "agent", "verify"]}
    for role in [*roles, "agent"]:
        inputs = containers[names.container(role)]
        assert inputs["hostname"] == names.container(role)
        assert names.container(role) in inputs["networksAdvanced"][0]["aliases"]
        assert inputs["networksAdvanced"][0]["name"] == names.network
    assert [n.plain_inputs["name"] for n in declaration.of_type(NETWORK)] == [names.network]
    volumes = {v.plain_inputs["name"] for v in declaration.of_type(VOLUME)}
    assert volumes == {names.volume(role) for role in ("build", "cache", "ghcr-cache", "front")}
    # The front dials exactly those containers.
    caddy = json.dumps(containers[names.container("front")]["uploads"])
    for role in ("build", "cache-standby", "ghcr-cache-standby"):
        assert names.dial(role, 5000) in caddy
    assert names.dial("agent", 8080) in caddy  # what the caches cannot serve goes to the agent
    for role in ("cache-herd", "ghcr-cache-herd"):  # which dial the caches (components/herd.py)
        assert names.dial(role, 6081) in caddy


def test_cache_url_and_daemon_mirror_use_the_same_primary_cache() -> None:
    # Docker Hub listed second: it is still the primary cache, for cacheUrl and for the hosts.
    declaration = declare({
        "enableBuild": False,
        "upstreams": ["ghcr=https://ghcr.io", "docker=https://registry-1.docker.io"],
        "mirrorHosts": ["local"],
    })
    names = Names("dev", "dev.internal.network")
    hub_url = names.url(names.cache_hostname("docker"))
    assert declaration.outputs["cacheUrl"] == hub_url
    assert json.loads(declaration.outputs["daemonJson"]) == {"registry-mirrors": [hub_url]}
    (mirror,) = declaration.outputs["daemonMirrors"].values()
    assert mirror["configured"]["registryMirror"] == hub_url
    # The host is pointed at the cache only after Docker Hub's cache and the front run, and
    # the stack's verification passed.
    (command,) = declaration.of_type(COMMAND)
    urns = command.options["dependencies"]
    containers = {urn.rsplit("::", 1)[-1] for urn in urns if "docker:index/container:Container" in urn}
    assert containers == {"registry-cache", "registry-front", "registry-verify"}


def test_pins_file_round_trips_sorted_unique_references() -> None:
    from components import pins

    text = pins.pins_file(["library/busybox@sha256:" + "a" * 64, "library/alpine:3.20", "library/alpine:3.20"])
    assert pins.parse_pins_file(text) == ("library/alpine:3.20", "library/busybox@sha256:" + "a" * 64)
    assert text.startswith("#")
