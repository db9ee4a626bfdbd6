"""A stand-in upstream that rate-limits like Docker Hub, switchable while it runs.

A Caddy container (the local caddy image) in front of a plain stand-in registry, under the
network alias the cache uses as its upstream. `limit(mode)` reloads Caddy with the config
of that mode (`caddy reload`, through Caddy's admin endpoint inside the container):

- `open`: everything passes to the registry, with Docker Hub's headers
  `ratelimit-limit: 100;w=21600` and `ratelimit-remaining: 99;w=21600`.
- `pull-limit`: what Docker Hub does once an address has used up its pulls
  (docs.docker.com, "Docker Hub pull usage and limits"; the headers as Docker Hub sends
  them, e.g. gist.github.com/jeversol/369009aaad4cd2cd8e2610fa68d4c4be): a manifest GET
  gets `429 Too Many Requests` with
  `{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit. ..."}]}`
  and `ratelimit-remaining: 0;w=21600`; a manifest HEAD is not a pull and still gets
  `200`, with `ratelimit-remaining: 0;w=21600`; blobs still flow (only manifest GETs count).
- `overall`: Docker Hub's overall request limit, a bare `429 Too Many Requests` for
  every request under /v2/.

Docker Hub reads need a token; this stand-in is anonymous, as the existing stand-in
Docker Hub is (testbed/upstreams.py): the agent's token flow is unit-tested apart.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import docker

from testbed import E2E_STACK_LABEL, images
from testbed.upstreams import StandinUpstream, create_with_files, start_standin_upstream

MODES = ("open", "pull-limit", "overall")
PULL_LIMIT_MESSAGE = (
    "You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: "
    "https://www.docker.com/increase-rate-limit"
)
LIMIT = "100;w=21600"
MANIFEST_PATH = r"^/v2/.+/manifests/[^/]+$"


def _headers(remaining: int) -> dict[str, list[str]]:
    return {"ratelimit-limit": [LIMIT], "ratelimit-remaining": [f"{remaining};w=21600"],
            "docker-ratelimit-source": ["127.0.0.1"]}


def _to_origin(origin: str, remaining: int) -> dict[str, Any]:
    return {"handler": "reverse_proxy", "upstreams": [{"dial": origin}], "flush_interval": -1,
            "headers": {"response": {"set": _headers(remaining)}}}


def _too_many(body: str, remaining: int | None) -> dict[str, Any]:
    headers = {"Content-Type": ["application/json" if body.startswith("{") else "text/plain"]}
    if remaining is not None:
        headers.update(_headers(remaining))
    return {"handler": "static_response", "status_code": 429, "headers": headers, "body": body}


def caddy_config(mode: str, origin: str) -> dict[str, Any]:
    """The stand-in's config in one mode; `origin` is host:port of the registry behind it."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {MODES}")
    routes: list[dict[str, Any]] = []
    if mode == "pull-limit":
        body = json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": PULL_LIMIT_MESSAGE}]})
        routes.append({"match": [{"method": ["GET"], "path_regexp": {"pattern": MANIFEST_PATH}}],
                       "handle": [_too_many(body, 0)]})
    if mode == "overall":
        routes.append({"match": [{"path": ["/v2/*"]}], "handle": [_too_many("Too Many Requests\n", None)]})
    routes.append({"handle": [_to_origin(origin, 0 if mode != "open" else 99)]})
    server = {"listen": [":5000"], "automatic_https": {"disable": True}, "routes": routes}
    return {"admin": {"listen": "localhost:2019"}, "apps": {"http": {"servers": {"hub": server}}}}


@dataclass
class RateLimitedUpstream:
    """The Caddy in front (answers as `alias`) and the registry behind it (seeded through 127.0.0.1)."""

    client: docker.DockerClient
    front_name: str
    origin: StandinUpstream
    alias: str

    @property
    def url_for_cache(self) -> str:
        return f"http://{self.alias}:5000"

    @property
    def seed_address(self) -> str:
        """Where the test pushes images the upstream should have (the registry itself)."""
        return self.origin.local_address

    def limit(self, mode: str) -> None:
        container = self.client.containers.get(self.front_name)
        result = container.exec_run(["caddy", "reload", "--config", f"/etc/caddy/{mode}.json"])
        if result.exit_code != 0:
            raise AssertionError(f"reloading the stand-in into {mode}: {result.output.decode(errors='replace')}")

    def remove(self) -> None:
        for name in (self.front_name, self.origin.name):
            with contextlib.suppress(docker.errors.NotFound):
                self.client.containers.get(name).remove(force=True)


def start_rate_limited_upstream(
    client: docker.DockerClient, network: str, stack: str, alias: str = "hub"
) -> RateLimitedUpstream:
    """Start the registry (alias `<alias>-origin`) and the rate-limiting front (alias `alias`), open."""
    prefix = f"registry-stack-{stack}-{alias}"
    origin = start_standin_upstream(client, network, f"{prefix}-origin", f"{alias}-origin", stack=stack)
    front_name = f"{prefix}-limiter"
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(front_name).remove(force=True)
    configs = {
        f"/etc/caddy/{mode}.json": json.dumps(caddy_config(mode, f"{alias}-origin:5000")).encode()
        for mode in MODES
    }
    create_with_files(
        client, images.CADDY.tag, configs, name=front_name, network=network,
        networking_config={network: {"Aliases": [alias]}},
        command=["caddy", "run", "--config", "/etc/caddy/open.json"],
        labels={"registry-stack.e2e": "upstream", E2E_STACK_LABEL: stack},
    )
    return RateLimitedUpstream(client, front_name, origin, alias)
