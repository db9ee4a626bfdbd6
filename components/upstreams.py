"""The registries the site caches: the `upstreams` list and its `upstreamCredentials`.

Each entry of `upstreams` is `name=url` with optional `;ttl=<duration>` (registry 3.x
only), e.g. `docker=https://registry-1.docker.io` or `ghcr=https://ghcr.io;ttl=72h`.
Each upstream gets its own cache registry and hostname `<name>-cache.<domain>`; the one
named `docker` is Docker Hub's, the mirror daemons use (`docker-cache.<domain>`).
`upstreamCredentials` is a secret list of `name=username:password` entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import naming
from .config_schema import PROJECT, ConfigError, default
from .secret import Secret

DOCKER_HUB_URL = "https://registry-1.docker.io"
DEFAULT_UPSTREAMS: tuple[str, ...] = tuple(default("upstreams"))

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
_DURATION = re.compile(r"^(?:\d+h)?(?:\d+m)?(?:\d+s)?$")
ENTRY_FORMAT = '"name=https://host[;ttl=168h]"'


@dataclass(frozen=True)
class Upstream:
    """One registry the site caches, and where its cache lives."""

    name: str
    url: str
    username: str = ""
    password: Secret | None = None
    ttl: str = ""
    # Pinned references in this cache (components/pins.py), filled from `prewarm`.
    pins: tuple[str, ...] = ()
    # Size cap of this cache's storage in bytes (cacheMaxSize); 0: none.
    max_bytes: int = 0

    @property
    def has_credentials(self) -> bool:
        return self.password is not None

    @property
    def role(self) -> str:
        """Container role: `cache` for Docker Hub's cache, `<name>-cache` for the others."""
        return naming.cache_role(self.name)

    @property
    def standby_role(self) -> str:
        return naming.standby_role(self.name)

    def hostname(self, domain: str) -> str:
        return naming.cache_hostname(self.name, domain)

    @property
    def is_docker_hub(self) -> bool:
        return naming.is_docker_hub(self.name)


def parse_upstreams(entries: list[Any], registry_major: int) -> tuple[Upstream, ...]:
    """Validate the `upstreams` list (without credentials)."""
    if not entries:
        raise ConfigError(
            f"{PROJECT}:upstreams is empty: the cache needs at least one upstream, for example "
            f"`pulumi config set --path '{PROJECT}:upstreams[0]' '{DEFAULT_UPSTREAMS[0]}'`, "
            f"or set {PROJECT}:enableCache false"
        )
    upstreams: list[Upstream] = []
    for index, entry in enumerate(entries):
        upstream = _parse_entry(index, str(entry), registry_major)
        _reject_duplicate(upstreams, upstream, index)
        upstreams.append(upstream)
    return tuple(upstreams)


def _parse_entry(index: int, entry: str, registry_major: int) -> Upstream:
    key = f"{PROJECT}:upstreams[{index}]"
    name, equals, rest = entry.partition("=")
    url, _, options = rest.partition(";")
    name, url = name.strip(), url.strip().rstrip("/")
    if not equals or not _NAME.match(name):
        raise ConfigError(
            f"{key}={entry!r} is invalid: expected {ENTRY_FORMAT} with a name of lowercase "
            "letters, digits and '-' (it becomes the hostname <name>-cache.<domain>)"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{key}={entry!r} is invalid: the URL must start with https:// or http://")
    if parts.path not in ("", "/"):
        raise ConfigError(f"{key}={entry!r} is invalid: a registry URL is the root of its host: drop the path")
    ttl = _parse_options(key, entry, options)
    if ttl and registry_major < 3:
        raise ConfigError(
            f"{key}={entry!r} sets ttl, which registry 2.x does not support (it keeps cached "
            "content 7 days): drop ;ttl=..., or set registryImage to a 3.x tag"
        )
    return Upstream(name=name, url=url, ttl=ttl)


def _parse_options(key: str, entry: str, options: str) -> str:
    ttl = ""
    for option in filter(None, (o.strip() for o in options.split(";"))):
        option_name, _, value = option.partition("=")
        if option_name != "ttl":
            raise ConfigError(f"{key}={entry!r} has unknown option {option_name!r}: the only option is ttl")
        if not value or not _DURATION.match(value):
            raise ConfigError(f"{key}={entry!r} has ttl={value!r}: expected a duration such as 168h or 30m")
        ttl = value
    return ttl


def _reject_duplicate(known: list[Upstream], upstream: Upstream, index: int) -> None:
    for other in known:
        if other.name == upstream.name:
            raise ConfigError(
                f"{PROJECT}:upstreams[{index}] names upstream {upstream.name!r} twice: "
                "each name (and so each hostname <name>-cache.<domain>) must be unique"
            )
        if other.url == upstream.url:
            raise ConfigError(
                f"{PROJECT}:upstreams[{index}] caches {upstream.url} again (already as "
                f"{other.name!r}): one cache per upstream"
            )


def parse_credentials(entries: list[Any], upstreams: tuple[Upstream, ...]) -> dict[str, tuple[str, str]]:
    """`name=username:password` entries -> {name: (username, password)}; never echoes a password."""
    names = {u.name for u in upstreams}
    result: dict[str, tuple[str, str]] = {}
    for index, entry in enumerate(entries):
        key = f"{PROJECT}:upstreamCredentials[{index}]"
        name, equals, credentials = str(entry).partition("=")
        username, colon, password = credentials.partition(":")
        if not equals or not colon or not username or not password:
            raise ConfigError(f'{key}=**** is invalid: expected "name=username:password"')
        if name not in names:
            raise ConfigError(
                f"{key} is for upstream {name!r}, which {PROJECT}:upstreams does not list "
                f"(it has {', '.join(sorted(names))})"
            )
        if name in result:
            raise ConfigError(f"{key} gives credentials for {name!r} twice: keep one entry per upstream")
        result[name] = (username, password)
    return result
