"""The `prewarm` list: images every `pulumi up` pulls into the caches, pinned unless `;pin=false`.

Each entry is `upstream=repository:tag` or `upstream=repository@sha256:<hex>`, e.g.
`docker=library/alpine:3.20` or `ghcr=org/tool@sha256:...;pin=false`. The upstream is a name
from `upstreams`; the repository is named as that upstream names it (Docker Hub's official
images are `library/<name>`, and a short name such as `alpine` on the Docker Hub upstream
means `library/alpine`, as the Docker CLI reads it). Pinned entries become the upstream's
`Upstream.pins` (components/pins.py), which the size cap and the TTL housekeeping read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from .config_schema import ConfigError, ref
from .upstreams import Upstream

ENTRY_FORMAT = '"upstream=repository:tag" or "upstream=repository@sha256:<64 hex digits>" [;pin=false]'
# distribution/reference's grammar (reference/regexp.go): path components of lowercase
# letters and digits joined by '.', '_', '__' or '-'s; a tag of up to 128 word characters,
# '.' and '-' that does not start with '.' or '-'.
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
# The algorithms distribution accepts (go-digest): sha256 and sha512, lowercase hex.
_DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"^[a-f0-9]+$")


@dataclass(frozen=True)
class PrewarmImage:
    """One image pulled into one cache on every `pulumi up`."""

    upstream: str
    repository: str
    tag: str = ""
    digest: str = ""
    pin: bool = True

    @property
    def reference(self) -> str:
        """`repository:tag` or `repository@digest`, as the pins file holds it."""
        return f"{self.repository}@{self.digest}" if self.digest else f"{self.repository}:{self.tag}"

    @property
    def manifest_reference(self) -> str:
        """What goes after `/v2/<repository>/manifests/`."""
        return self.digest or self.tag

    @property
    def label(self) -> str:
        """How warnings and `prewarmFailures` name it: `upstream=repository:tag`."""
        return f"{self.upstream}={self.reference}"


def parse_prewarm(entries: Iterable[Any], upstreams: tuple[Upstream, ...]) -> tuple[PrewarmImage, ...]:
    """Validate the `prewarm` list against the upstreams it names."""
    by_name = {u.name: u for u in upstreams}
    images: list[PrewarmImage] = []
    for index, entry in enumerate(entries):
        image = _parse_entry(f"{ref('prewarm')}[{index}]", str(entry), by_name)
        for other in images:
            if (other.upstream, other.reference) == (image.upstream, image.reference):
                raise ConfigError(
                    f"{ref('prewarm')}[{index}]={str(entry)!r} lists {image.label} again: keep one entry per image"
                )
        images.append(image)
    return tuple(images)


def with_pins(upstreams: tuple[Upstream, ...], images: tuple[PrewarmImage, ...]) -> tuple[Upstream, ...]:
    """The upstreams with `pins` set to their pinned pre-warmed references."""
    return tuple(
        replace(u, pins=tuple(sorted({i.reference for i in images if i.upstream == u.name and i.pin})))
        for u in upstreams
    )


def _parse_entry(key: str, entry: str, upstreams: dict[str, Upstream]) -> PrewarmImage:
    name, equals, rest = entry.partition("=")
    reference, _, options = rest.partition(";")
    name, reference = name.strip(), reference.strip()
    if not equals or not name or not reference:
        raise ConfigError(f"{key}={entry!r} is invalid: expected {ENTRY_FORMAT}")
    upstream = upstreams.get(name)
    if upstream is None:
        raise ConfigError(
            f"{key}={entry!r} names upstream {name!r}, which {ref('upstreams')} does not list: use one of "
            f"{', '.join(sorted(upstreams))} (the part before '=' is the upstream's name, not its host)"
        )
    repository, tag, digest = _split_reference(key, entry, reference)
    _check_repository(key, entry, repository)
    if upstream.is_docker_hub and "/" not in repository:
        repository = f"library/{repository}"  # `alpine` on Docker Hub is library/alpine
    return PrewarmImage(name, repository, tag, digest, pin=_parse_options(key, entry, options))


def _split_reference(key: str, entry: str, reference: str) -> tuple[str, str, str]:
    """repository, tag, digest: exactly one of tag and digest."""
    repository, at, digest = reference.partition("@")
    last = repository.rsplit("/", 1)[-1]
    tag = last.partition(":")[2] if ":" in last else ""
    if tag:
        repository = repository[: -len(tag) - 1]
    if at and tag:
        raise ConfigError(
            f"{key}={entry!r} gives both a tag and a digest: keep one (the digest pins the exact image, "
            f"so {repository}@{digest})"
        )
    if not at and not tag:
        raise ConfigError(
            f"{key}={entry!r} has no tag or digest: add one, e.g. {reference}:<tag> or {reference}@sha256:<digest> "
            "(pre-warming never assumes latest)"
        )
    if at:
        _check_digest(key, entry, digest)
    elif not _TAG.match(tag):
        raise ConfigError(
            f"{key}={entry!r} has the tag {tag!r}: a tag is 1-128 letters, digits, '_', '.' and '-', "
            "not starting with '.' or '-'"
        )
    return repository, tag, digest


def _check_digest(key: str, entry: str, digest: str) -> None:
    algorithm, colon, hex_part = digest.partition(":")
    length = _DIGEST_LENGTHS.get(algorithm)
    if not colon or length is None or len(hex_part) != length or not _HEX.match(hex_part):
        raise ConfigError(
            f"{key}={entry!r} has the digest {digest!r}: expected sha256: and 64 lowercase hex digits "
            "(or sha512: and 128), as `docker buildx imagetools inspect <image>` prints it"
        )


def _check_repository(key: str, entry: str, repository: str) -> None:
    components = repository.split("/")
    if len(components) > 1 and ("." in components[0] or ":" in components[0] or components[0] == "localhost"):
        raise ConfigError(
            f"{key}={entry!r} starts with the registry host {components[0]!r}: drop it, the upstream is "
            "named before '=' (e.g. docker=library/alpine:3.20)"
        )
    if not all(_COMPONENT.match(component) for component in components):
        raise ConfigError(
            f"{key}={entry!r} has the repository {repository!r}: expected lowercase path components of letters "
            "and digits joined by '.', '_' or '-', separated by '/' (e.g. library/alpine)"
        )


def _parse_options(key: str, entry: str, options: str) -> bool:
    pin = True
    for option in filter(None, (o.strip() for o in options.split(";"))):
        option_name, _, value = option.partition("=")
        if option_name != "pin":
            raise ConfigError(f"{key}={entry!r} has unknown option {option_name!r}: the only option is pin=false")
        if value not in ("true", "false"):
            raise ConfigError(f"{key}={entry!r} has pin={value!r}: expected pin=true or pin=false")
        pin = value == "true"
    return pin
