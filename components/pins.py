"""Pinned images of a cache: what neither the size cap nor the TTL may remove.

The one interface between pre-warming (which decides what is pinned: `prewarm` entries, unless
`;pin=false`) and the cache's housekeeping (the size cap's eviction and the start script that
keeps the proxy scheduler from expiring pinned content). Both read the same file, rendered here,
in the cache's containers at `PINS_PATH`.

A reference is a repository as the cache stores it (Docker Hub's official images under
`library/`) with a tag or a digest: `library/alpine:3.20`, `library/busybox@sha256:<hex>`.
A tag pins the manifest the tag names in the cache's storage when housekeeping runs (and, for an
index, every manifest and blob it lists).
"""

from __future__ import annotations

from collections.abc import Iterable

from .upstreams import Upstream

PINS_PATH = "/etc/registry-stack/pins"


def pinned_references(upstream: Upstream) -> tuple[str, ...]:
    """The references pinned in `upstream`'s cache, sorted and without repeats.

    Pre-warming fills `Upstream.pins`; an upstream without pins pins nothing.
    """
    return tuple(sorted(set(upstream.pins)))


def pins_file(references: Iterable[str]) -> str:
    """The file at PINS_PATH: one reference a line, `#` comments allowed, sorted."""
    lines = sorted(set(references))
    header = "# pinned in this cache: never evicted by the size cap, never expired by the TTL\n"
    return header + "".join(f"{line}\n" for line in lines)


def parse_pins_file(text: str) -> tuple[str, ...]:
    """The references of a pins file (what the housekeeping scripts in the containers do too)."""
    return tuple(
        line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )
