"""Every name the stack gives to things, in one place.

- Docker objects: `registry-stack-<stack>` is the network and the prefix of every
  container (`-<role>`, also its hostname and network alias) and volume (`-<role>-data`),
  so several stacks share one engine without clashes.
- Roles: `build`, `front`, and per upstream `cache` (Docker Hub's) or `<name>-cache`, with
  its read-only `...-standby`.
- Public names: `docker-build.<domain>`, `<upstream>-cache.<domain>`, `registry.<domain>`,
  their https URLs and the `host[:port]` Docker uses for logins and certs.d folders.
- The primary cache: the cache of the upstream named `docker` (Docker Hub) when there is
  one, else the first cached upstream. It is the stack's `cacheUrl` and the mirror the
  DaemonMirror writes into daemon.json. The `daemonJson` output and the unified
  endpoint's fallback want Docker Hub itself: `docker_hub`.

Pure functions of plain values: the stack, the renderers and DaemonMirror call these and
never format a name themselves. It imports only config_schema (the project name).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from .config_schema import PROJECT  # the one declaration of the project name

DOCKER_HUB_NAME = "docker"
BUILD = "build"
FRONT = "front"
AGENT = "agent"  # explains what the caches cannot serve (components/agent.py)
HTTPS_DEFAULT_PORT = 443


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_U = TypeVar("_U", bound=_Named)


def cache_role(upstream_name: str) -> str:
    """Container role of an upstream's cache: `cache` for Docker Hub's, `<name>-cache` otherwise."""
    return "cache" if upstream_name == DOCKER_HUB_NAME else f"{upstream_name}-cache"


def standby_role(upstream_name: str) -> str:
    """Role of the read-only registry that serves an upstream's cache while it cannot run."""
    return f"{cache_role(upstream_name)}-standby"


def herd_role(upstream_name: str) -> str:
    """Role of the herd tier (Varnish) in front of an upstream's cache (components/herd.py)."""
    return f"{cache_role(upstream_name)}-herd"


def cache_hostname(upstream_name: str, domain: str) -> str:
    return f"{upstream_name}-cache.{domain}"


def build_hostname(domain: str) -> str:
    return f"docker-build.{domain}"


def unified_hostname(domain: str) -> str:
    return f"registry.{domain}"


def is_docker_hub(upstream_name: str) -> bool:
    return upstream_name == DOCKER_HUB_NAME


def docker_hub(upstreams: Sequence[_U]) -> _U | None:
    """The upstream named docker (Docker Hub), if listed."""
    return next((u for u in upstreams if is_docker_hub(u.name)), None)


def primary(upstreams: Sequence[_U]) -> _U | None:
    """The primary cache's upstream: Docker Hub when listed, else the first; None for none."""
    return docker_hub(upstreams) or (upstreams[0] if upstreams else None)


@dataclass(frozen=True)
class Names:
    """The names of one stack: its Docker objects and the registries' public names."""

    stack: str
    domain: str
    https_port: int = HTTPS_DEFAULT_PORT
    # Swarm mode: the node whose services these names are (its front, caches, agent); the
    # build registry is one service for every node. Empty on one Docker host.
    node: str = ""

    @property
    def prefix(self) -> str:
        """`registry-stack-<stack>`: the network, and the prefix of every container and volume."""
        return f"{PROJECT}-{self.stack}"

    @property
    def network(self) -> str:
        """The network the stack creates when it joins no existing one."""
        return self.prefix

    def container(self, role: str) -> str:
        """A container's (or service's) name, which is also its hostname and its alias on the network.

        In swarm mode every role but the build registry is bound to a node: `...-<role>-<node>`.
        """
        if self.node and role != BUILD:
            return f"{self.prefix}-{role}-{self.node}"
        return f"{self.prefix}-{role}"

    def volume(self, role: str) -> str:
        return f"{self.prefix}-{role}-data"

    def dial(self, role: str, port: int) -> str:
        """host:port the front dials to reach a container on the stack's network."""
        return f"{self.container(role)}:{port}"

    @property
    def build_hostname(self) -> str:
        return build_hostname(self.domain)

    def cache_hostname(self, upstream_name: str) -> str:
        return cache_hostname(upstream_name, self.domain)

    @property
    def unified_hostname(self) -> str:
        return unified_hostname(self.domain)

    def url(self, hostname: str) -> str:
        """The https URL of a hostname, with the port only when it is not 443."""
        return f"https://{self.address(hostname)}"

    def address(self, hostname: str) -> str:
        """host[:port] as the Docker CLI and /etc/docker/certs.d name a registry."""
        return hostname if self.https_port == HTTPS_DEFAULT_PORT else f"{hostname}:{self.https_port}"
