"""Each client runtime's own mirror configuration for the stack's caches: pure renderers.

One `CachedRegistry` per cached upstream says what clients call the upstream (`docker.io`,
`ghcr.io`, `host:port`) and where its cache answers. From that list:

- `podman_registries_conf`: a containers-registries.conf(5) drop-in for
  /etc/containers/registries.conf.d/ (podman, buildah, skopeo read it on every command;
  CRI-O on SIGHUP): `[[registry]]` per upstream with the cache as its `[[registry.mirror]]`.
  The CA goes to /etc/containers/certs.d/<cache host:port>/ca.crt.
- `k3s_registries_yaml`: /etc/rancher/k3s/registries.yaml (k3s and RKE2; read at start, so
  restart k3s/rke2 on each node): `mirrors.<registry>.endpoint` and `configs.<cache>.tls`.
- `buildkitd_toml`: buildkitd.toml `[registry."<registry>"] mirrors` plus the cache's
  `ca` (for `docker buildx create --buildkitd-config`; a change means a new builder).

containerd's hosts.toml (also dockerd's with the containerd image store) is rendered by
components/daemon_mirror.py, which installs it. Every renderer here is a function of plain
values; the stack exports their text (`podmanRegistriesConf`, `k3sRegistriesYaml`,
`buildkitdToml`) for hosts DaemonMirror does not manage.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import naming

if TYPE_CHECKING:
    from .settings import Settings

DOCKER_HUB_HOSTS = ("registry-1.docker.io", "index.docker.io", "docker.io")
DOCKER_HUB_REGISTRY = "docker.io"
# Where the rendered k3s and BuildKit configs expect the stack's CA (self-signed mode).
K3S_CA_FILE = "/etc/rancher/k3s/registry-stack-ca.crt"
BUILDKIT_CA_FILE = "/etc/buildkit/registry-stack-ca.crt"
HEADER = "Written by registry-stack: pulls of each registry below go to its cache first."


@dataclass(frozen=True)
class CachedRegistry:
    """One cached upstream as clients see it."""

    registry: str
    """The name clients pull by: docker.io for Docker Hub, else the upstream's host[:port]."""
    upstream_url: str
    cache_url: str
    """https://<name>-cache.<domain>[:port]"""
    cache_address: str
    """<name>-cache.<domain>[:port], as certs.d folders and registries.conf locations name it."""


def registry_name(upstream_url: str) -> str:
    """What clients call an upstream: `docker.io` for Docker Hub, else its host[:port]."""
    parts = urlsplit(upstream_url)
    if (parts.hostname or "") in DOCKER_HUB_HOSTS:
        return DOCKER_HUB_REGISTRY
    return parts.netloc


def cached_registries(settings: Settings) -> tuple[CachedRegistry, ...]:
    """Every cached upstream, the primary cache (dockerd's mirror) first; none without a cache."""
    if not settings.enable_cache:
        return ()
    primary = naming.primary(settings.caches)
    ordered = [primary, *(u for u in settings.caches if u != primary)] if primary else []
    names = settings.names
    return tuple(
        CachedRegistry(
            registry=registry_name(u.url),
            upstream_url=u.url,
            cache_url=names.url(names.cache_hostname(u.name)),
            cache_address=names.address(names.cache_hostname(u.name)),
        )
        for u in ordered
    )


def _quoted(value: str) -> str:
    # A JSON string is a valid TOML basic string and a valid YAML double-quoted scalar.
    return json.dumps(value, ensure_ascii=False)


def podman_registries_conf(registries: Sequence[CachedRegistry]) -> str:
    """registries.conf.d drop-in (v2 format): each registry pulls from its cache first.

    `prefix` and `location` keep the registry itself, so a pull falls back to it when the
    cache does not answer, and image names stay the upstream's (docker.io/library/alpine).
    """
    lines = [f"# {HEADER}", "# podman, buildah and skopeo read this on every command; CRI-O on SIGHUP."]
    for entry in registries:
        lines += [
            "",
            "[[registry]]",
            f"prefix = {_quoted(entry.registry)}",
            f"location = {_quoted(entry.registry)}",
            "",
            "[[registry.mirror]]",
            f"location = {_quoted(entry.cache_address)}",
        ]
    return "\n".join(lines) + "\n"


def k3s_registries_yaml(registries: Sequence[CachedRegistry], ca_file: str | None = K3S_CA_FILE) -> str:
    """/etc/rancher/k3s/registries.yaml: a mirror endpoint per registry, the CA per cache.

    k3s tries the default endpoint (the registry itself) after the mirrors unless it runs
    with --disable-default-registry-endpoint. `ca_file` None: the caches' certificate is public.
    """
    lines = [f"# {HEADER}", "# k3s / RKE2 read this at start: restart k3s (or rke2-server/agent) on each node.",
             "mirrors:"]
    for entry in registries:
        lines += [f"  {_quoted(entry.registry)}:", "    endpoint:", f"      - {_quoted(entry.cache_url)}"]
    if ca_file and registries:
        lines.append("configs:")
        for entry in registries:
            lines += [f"  {_quoted(entry.cache_address)}:", "    tls:", f"      ca_file: {_quoted(ca_file)}"]
    return "\n".join(lines) + "\n"


def buildkitd_toml(registries: Sequence[CachedRegistry], ca_file: str | None = BUILDKIT_CA_FILE) -> str:
    """buildkitd.toml: `[registry."<registry>"] mirrors` per registry, the CA per cache."""
    lines = [f"# {HEADER}", "# Pass it to a builder: docker buildx create --buildkitd-config <this file> (a change"
             " needs a new builder)."]
    for entry in registries:
        lines += ["", f"[registry.{_quoted(entry.registry)}]", f"  mirrors = [{_quoted(entry.cache_address)}]"]
    if ca_file:
        for entry in registries:
            lines += ["", f"[registry.{_quoted(entry.cache_address)}]", f"  ca = [{_quoted(ca_file)}]"]
    return "\n".join(lines) + "\n"


def stack_outputs(settings: Settings) -> dict[str, str]:
    """The client configs as stack outputs ("" without a cache); the CA paths only in
    self-signed mode (ACME certificates are publicly trusted)."""
    registries = cached_registries(settings)
    if not registries:
        return {"podmanRegistriesConf": "", "k3sRegistriesYaml": "", "buildkitdToml": ""}
    private_ca = not settings.tls.is_acme
    return {
        "podmanRegistriesConf": podman_registries_conf(registries),
        "k3sRegistriesYaml": k3s_registries_yaml(registries, K3S_CA_FILE if private_ca else None),
        "buildkitdToml": buildkitd_toml(registries, BUILDKIT_CA_FILE if private_ca else None),
    }
