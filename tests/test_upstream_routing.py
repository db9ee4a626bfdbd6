"""Several upstreams and the unified endpoint: the rendered routing, without mocks.

`route()` walks the rendered Caddy JSON the way Caddy does for the matchers and handlers
the program uses (host, method, path, not; authentication, rewrite, static_response,
reverse_proxy with handle_response), so each routing rule is checked as behaviour.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

import pytest

from components import agent, renderers
from components.daemon_mirror import containerd_hosts_toml, containerd_registry_folder, containerd_server
from tests import harness

front = harness.front_json
make = harness.render_settings
server = harness.tls_server

UPSTREAMS = ["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io", "quay=https://quay.io"]
DOMAIN = "dev.internal.network"
UNIFIED = f"registry.{DOMAIN}"
READS = ("GET", "HEAD")


@dataclass
class Outcome:
    """Where a request ends: the upstreams dialled (in order) and the path they see, or an error."""

    authenticated: bool = False
    dials: list[str] = field(default_factory=list)
    path: str = ""
    on_404: list[str] = field(default_factory=list)
    error: tuple[int, str] | None = None


def _match(matcher_set: dict[str, Any], request: dict[str, str]) -> bool:
    for name, arg in matcher_set.items():
        if name == "host" and request["host"] not in arg:
            return False
        if name == "method" and request["method"] not in arg:
            return False
        if name == "path" and not any(fnmatch.fnmatchcase(request["path"], pattern) for pattern in arg):
            return False
        if name == "not" and any(_match(inner, request) for inner in arg):
            return False
        if name == "path_regexp" and not re.search(arg["pattern"], request["path"]):
            return False
        if name == "file":  # nothing stored yet: blob reads reach the registries
            return False
        if name not in ("host", "method", "path", "not", "path_regexp", "file"):
            raise AssertionError(f"unknown matcher {name}")
    return True


def _walk(routes: list[dict[str, Any]], request: dict[str, str], outcome: Outcome) -> bool:
    for route in routes:
        if route.get("match") and not any(_match(m, request) for m in route["match"]):
            continue
        for handler in route["handle"]:
            kind = handler["handler"]
            if kind == "subroute":
                if _walk(handler["routes"], request, outcome):
                    return True
            elif kind == "authentication":
                outcome.authenticated = True
            elif kind == "rewrite":
                for substitution in handler["uri_substring"]:
                    request["path"] = request["path"].replace(substitution["find"], substitution["replace"], 1)
            elif kind == "static_response":
                outcome.error = (handler["status_code"], json.loads(handler["body"])["errors"][0]["code"])
                return True
            elif kind == "reverse_proxy":
                outcome.dials = [u["dial"] for u in handler["upstreams"]]
                outcome.path = request["path"]
                for fallback in handler.get("handle_response", []):
                    if fallback["routes"][0]["handle"][0]["upstreams"][0]["dial"] == AGENT:
                        continue  # a cache's misses, explained by the agent (tests/test_agent.py)
                    assert fallback["match"] == {"status_code": [404]}
                    inner = fallback["routes"][0]["handle"][0]
                    outcome.on_404 = [u["dial"] for u in inner["upstreams"]]
                return True
            else:
                raise AssertionError(f"unknown handler {kind}")
        if route.get("terminal"):
            return True
    return False


def route(config: dict[str, Any], host: str, method: str, path: str) -> Outcome:
    outcome = Outcome()
    request = {"host": host, "method": method, "path": path}
    assert _walk(server(config)["routes"], request, outcome), f"{method} {host}{path} gets no answer"
    return outcome


AGENT = f"registry-stack-dev-agent:{agent.AGENT_PORT}"


def dial(role: str) -> str:
    return f"registry-stack-dev-{role}:{renderers.REGISTRY_PORT}"


def herd_dial(cache_role: str) -> str:
    """A cache's reads go through its herd tier (components/herd.py), which dials the cache."""
    return f"registry-stack-dev-{cache_role}-herd:{renderers.HERD_PORT}"


@pytest.fixture(scope="module")
def unified() -> dict[str, Any]:
    return front(make(upstreams=UPSTREAMS, unifiedEndpoint=True))


# -- one cache per upstream ------------------------------------------------------------------


@pytest.mark.parametrize(("name", "role"), [("docker", "cache"), ("ghcr", "ghcr-cache"), ("quay", "quay-cache")])
def test_each_upstream_host_reads_anonymously_from_its_own_cache_then_its_standby(unified, name, role) -> None:
    outcome = route(unified, f"{name}-cache.{DOMAIN}", "GET", "/v2/org/app/manifests/1")
    assert not outcome.authenticated
    assert outcome.dials == [herd_dial(role), dial(f"{role}-standby")]
    assert route(unified, f"{name}-cache.{DOMAIN}", "PUT", "/v2/org/app/manifests/1").error == (405, "UNSUPPORTED")


def test_each_cache_registry_proxies_its_own_upstream_with_its_own_credentials() -> None:
    settings = make(upstreams=UPSTREAMS, upstreamCredentials=["ghcr=robot:tok-XYZZY-4242"])
    by_name = {u.name: u for u in settings.upstreams}
    assert by_name["ghcr"].username == "robot" and by_name["docker"].password is None
    for upstream in settings.upstreams:
        credentials = (
            renderers.ProxyCredentials(upstream.username, upstream.password.reveal()) if upstream.password else None
        )
        config = json.loads(renderers.registry_config("cache", 2, upstream.url, credentials))
        assert config["proxy"]["remoteurl"] == upstream.url
        assert ("password" in config["proxy"]) == (upstream.name == "ghcr")


def test_proxy_ttl_is_rendered_for_registry_3_only() -> None:
    config = json.loads(renderers.registry_config("cache", 3, "https://ghcr.io", ttl="72h"))
    assert config["proxy"]["ttl"] == "72h"
    with pytest.raises(ValueError, match=r"3\.x"):
        renderers.registry_config("cache", 2, "https://ghcr.io", ttl="72h")


def test_daemon_json_names_only_the_docker_hub_cache() -> None:
    settings = make(upstreams=["ghcr=https://ghcr.io", "docker=https://registry-1.docker.io"])
    assert json.loads(renderers.daemon_json_snippet(settings)) == {
        "registry-mirrors": [f"https://docker-cache.{DOMAIN}"]
    }
    no_hub = make(upstreams=["ghcr=https://ghcr.io"])
    assert renderers.daemon_json_snippet(no_hub).strip() == "{}"


# -- the unified endpoint's routing rule -----------------------------------------------------


def test_unified_endpoint_is_off_by_default() -> None:
    config = front(make(upstreams=UPSTREAMS))
    assert UNIFIED not in json.dumps(config)


@pytest.mark.parametrize("method", [*READS, "POST", "PUT", "PATCH", "DELETE"])
def test_unified_endpoint_authenticates_everything(unified, method) -> None:
    assert route(unified, UNIFIED, method, "/v2/").authenticated
    assert route(unified, UNIFIED, method, "/v2/team/app/manifests/1").authenticated


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_unified_pushes_go_to_the_build_registry(unified, method) -> None:
    outcome = route(unified, UNIFIED, method, "/v2/team/app/blobs/uploads/")
    assert outcome.dials == [dial("build")] and outcome.path == "/v2/team/app/blobs/uploads/"


@pytest.mark.parametrize("name", ["library/alpine", "ghcr/org/app", "quay/org/app", "docker/library/alpine"])
def test_unified_refuses_pushes_of_names_that_belong_to_an_upstream(unified, name) -> None:
    assert route(unified, UNIFIED, "POST", f"/v2/{name}/blobs/uploads/").error == (403, "DENIED")


@pytest.mark.parametrize(("prefix", "role"), [("ghcr", "ghcr-cache"), ("quay", "quay-cache"), ("docker", "cache")])
@pytest.mark.parametrize("method", READS)
def test_unified_pulls_of_an_upstream_namespace_go_to_its_cache_without_the_prefix(unified, prefix, role, method):
    outcome = route(unified, UNIFIED, method, f"/v2/{prefix}/org/app/manifests/1")
    assert outcome.dials == [herd_dial(role), dial(f"{role}-standby")]
    assert outcome.path == "/v2/org/app/manifests/1"
    assert outcome.on_404 == []


@pytest.mark.parametrize(
    "path", ["/v2/team/app/manifests/1", "/v2/library/alpine/blobs/sha256:abc", "/v2/alpine/tags/list"]
)
def test_unified_other_pulls_ask_the_build_registry_first_then_docker_hubs_cache(unified, path) -> None:
    outcome = route(unified, UNIFIED, "GET", path)
    assert outcome.dials == [dial("build")] and outcome.path == path
    assert outcome.on_404 == [herd_dial("cache"), dial("cache-standby")]


def test_unified_without_a_docker_hub_upstream_serves_the_build_registry_only() -> None:
    config = front(make(upstreams=["ghcr=https://ghcr.io"], unifiedEndpoint=True))
    outcome = route(config, UNIFIED, "GET", "/v2/library/alpine/manifests/3.18")
    assert outcome.dials == [dial("build")] and outcome.on_404 == []
    # library/ is Docker Hub's: with no Docker Hub upstream, the site may push it.
    assert route(config, UNIFIED, "POST", "/v2/library/alpine/blobs/uploads/").dials == [dial("build")]


# -- containerd: one hosts.toml per cached upstream --------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "folder", "server_url"),
    [
        ("https://registry-1.docker.io", "docker.io", "https://registry-1.docker.io"),
        ("https://ghcr.io", "ghcr.io", "https://ghcr.io"),
        ("https://quay.io", "quay.io", "https://quay.io"),
        ("http://private-upstream:5000", "private-upstream:5000", "http://private-upstream:5000"),
    ],
)
def test_containerd_hosts_toml_follows_the_documented_format(upstream, folder, server_url) -> None:
    """containerd's docs (hosts.md): certs.d/<registry host>/hosts.toml with `server` and
    `[host."<mirror>"]` tables holding `capabilities` and an optional `ca`."""
    cache_url = "https://ghcr-cache.dev.internal.network"
    text = containerd_hosts_toml(upstream, cache_url, "/etc/containerd/certs.d/ghcr-cache.dev.internal.network/ca.crt")
    parsed = tomllib.loads(text)
    assert containerd_registry_folder(upstream) == folder
    assert parsed["server"] == containerd_server(upstream) == server_url
    assert parsed["host"][cache_url]["capabilities"] == ["pull", "resolve"]
    assert parsed["host"][cache_url]["ca"].endswith("/ca.crt")
    assert set(parsed) == {"server", "host"} and set(parsed["host"][cache_url]) == {"capabilities", "ca"}


def test_containerd_hosts_get_one_hosts_toml_per_cached_upstream_under_mocks() -> None:
    from tests.harness import declare, unwrap

    declaration = declare(
        {"enableBuild": False, "upstreams": UPSTREAMS, "mirrorHosts": ["local?containerd=true"]}, stack="dev"
    )
    commands = [r for r in declaration.resources if r.type == "command:local:Command"]
    assert len(commands) == 1
    create = json.dumps(unwrap(commands[0].inputs))
    for folder in ("docker.io", "ghcr.io", "quay.io"):
        assert f"/etc/containerd/certs.d/{folder}/hosts.toml" in create
    # dockerd mirrors Docker Hub only: its mirror is the docker upstream's cache.
    assert f"https://docker-cache.{DOMAIN}" in create
