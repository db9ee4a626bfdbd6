"""What the caches hold and serve: hit counters, stored bytes, pulls per image.

- Hits and misses: every distribution release keeps its proxy counters in expvar, served
  on the debug port at `/debug/vars` as `registry.proxy.{blobs,manifests}` with
  `Requests`, `Hits`, `Misses`, `BytesPulled`, `BytesPushed` (registry/proxy/
  proxymetrics.go; 3.x also exports them to Prometheus as `registry_proxy_*_total`, 2.8
  does not). Read from expvar, they are the same for 2.8 and 3.x.
- Stored bytes: the size of every file under each registry's storage (mounted read-only
  into the agent), summed in the background: a walk of a large cache takes a while.
- Pulls per image: the front's access log (JSON lines, written by Caddy when metrics are
  on), read by `PullCounter`: a manifest request by tag, or a pull by digest.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

IMAGE_MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
PROXY_FIELDS = {"Requests": "requests", "Hits": "hits", "Misses": "misses",
                "BytesPulled": "pulled_bytes", "BytesPushed": "pushed_bytes"}
KINDS = {"blobs": "blob", "manifests": "manifest"}


@dataclass(frozen=True)
class Registry:
    """One registry the agent watches: a cache (`upstream` set) or the build registry."""

    name: str  # the upstream's name, or "build"
    debug_url: str  # http://<container>:5001
    data_dir: str  # its storage, mounted read-only
    cap_bytes: int = 0
    # distribution 2.8 counts every blob it serves as a hit and never a blob miss or the
    # bytes it fetched (its proxy never calls BlobPull; 3.x does, PR 4047): on 2.8 those
    # blob counters are dropped.
    counts_blob_misses: bool = True

    @property
    def is_cache(self) -> bool:
        return self.name != "build"


UNRELIABLE_ON_2X = ("hits", "misses", "pulled_bytes")


def reliable(counters: dict[str, dict[str, int]], counts_blob_misses: bool) -> dict[str, dict[str, int]]:
    """The counters without those the registry's version does not keep (see Registry)."""
    if counts_blob_misses or "blob" not in counters:
        return counters
    blob = {k: v for k, v in counters["blob"].items() if k not in UNRELIABLE_ON_2X}
    return {**counters, "blob": blob}


def proxy_counters(debug_url: str, timeout: float = 3.0) -> dict[str, dict[str, int]]:
    """{'blob': {'hits': ..}, 'manifest': {...}} from a registry's expvar; {} when unreadable."""
    try:
        with urllib.request.urlopen(f"{debug_url}/debug/vars", timeout=timeout) as answer:
            proxy = json.loads(answer.read()).get("registry", {}).get("proxy", {})
    except (OSError, ValueError):
        return {}
    return {
        kind: {name: int(proxy.get(plural, {}).get(field, 0)) for field, name in PROXY_FIELDS.items()}
        for plural, kind in KINDS.items()
    }


def stored_bytes(root: str) -> int:
    """Bytes of every regular file under root (links and folders count nothing)."""
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(folder, name)):
                total += info.st_size
    return total


TAG_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class ManifestRequest:
    """A manifest request the front answered 200, from its access log."""

    registry: str
    repository: str
    by_tag: bool
    image_manifest: bool  # an image's own manifest, not an index of platforms
    client: str
    time: float
    reference: str = ""  # the tag or digest asked for


def manifest_request(line: str, hosts: dict[str, str]) -> ManifestRequest | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    request = entry.get("request") or {}
    if request.get("method") not in ("GET", "HEAD") or entry.get("status") != 200:
        return None
    registry = hosts.get(str(request.get("host", "")).split(":", 1)[0])
    parts = str(request.get("uri", "")).split("?", 1)[0].split("/")
    if registry is None or len(parts) < 5 or parts[1] != "v2" or parts[-2] != "manifests":
        return None
    content_type = ((entry.get("resp_headers") or {}).get("Content-Type") or [""])[0]
    return ManifestRequest(
        registry=registry,
        repository="/".join(parts[2:-2]),
        by_tag=":" not in parts[-1],
        image_manifest=content_type.split(";", 1)[0].strip() in IMAGE_MANIFEST_TYPES,
        client=str(request.get("remote_ip", "")),
        time=float(entry.get("ts") or 0),
        reference=parts[-1],
    )


class PullCounter:
    """Pulls from manifest requests, whatever the client: one pull per image per client.

    A client pulling by tag asks for the tag first (docker: HEAD of the tag, then a GET of
    the digest, which it may skip when it knows the manifest; containerd: HEAD of the tag,
    the index, then the platform's manifest): the tag request is the pull, and what the
    same client asks of that repository by digest within a minute belongs to it. A pull by
    digest fetches one image manifest (after the index, for a multi-platform image): that
    manifest is the pull.
    """

    def __init__(self) -> None:
        self.pulls: Counter[tuple[str, str]] = Counter()
        self._last_tag: dict[tuple[str, str, str], float] = {}

    def add(self, request: ManifestRequest) -> None:
        key = (request.registry, request.repository, request.client)
        if request.by_tag:
            self._last_tag[key] = request.time
            self.pulls[(request.registry, request.repository)] += 1
        elif request.image_manifest and request.time - self._last_tag.get(key, -1e18) > TAG_WINDOW_SECONDS:
            self.pulls[(request.registry, request.repository)] += 1


class AccessLog:
    """Pulls per (registry, repository), counted from the access log and the files it rolled into.

    Caddy rolls `access.log` into `access-<time>.log` files and keeps a few; on start the
    agent counts what they hold, then follows the live file (a shrinking or replaced file
    means it rolled: start again from its beginning).
    """

    def __init__(self, path: str, hosts: dict[str, str]) -> None:
        self.path = path
        self.hosts = hosts
        self._counter = PullCounter()
        # (registry, repository, tag or digest) -> the time of its last pull: what the size cap evicts by.
        self.last_pulls: dict[tuple[str, str, str], float] = {}
        self._inode = 0
        self._offset = 0
        self._pending = ""
        self._lock = threading.Lock()
        self._count_rolled()

    def _count_rolled(self) -> None:
        folder, name = os.path.split(self.path)
        stem = name.rsplit(".", 1)[0]
        try:
            rolled = sorted(n for n in os.listdir(folder) if n.startswith(f"{stem}-") and n.endswith(".log"))
        except OSError:
            return
        for other in rolled:
            try:
                with open(os.path.join(folder, other), encoding="utf-8", errors="replace") as handle:
                    self._count(handle)
            except OSError:
                continue

    @property
    def pulls(self) -> Counter[tuple[str, str]]:
        return self._counter.pulls

    def _count(self, lines: Iterable[str]) -> None:
        for line in lines:
            request = manifest_request(line, self.hosts)
            if request:
                self._counter.add(request)
                key = (request.registry, request.repository, request.reference)
                self.last_pulls[key] = max(request.time, self.last_pulls.get(key, 0.0))

    def refresh(self) -> None:
        with self._lock:
            try:
                info = os.stat(self.path)
            except OSError:
                return
            if info.st_ino != self._inode or info.st_size < self._offset:
                self._inode, self._offset, self._pending = info.st_ino, 0, ""
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                handle.seek(self._offset)
                text = self._pending + handle.read()
                self._offset = handle.tell()
            complete, _, self._pending = text.rpartition("\n")
            self._count(complete.splitlines())

    def pulls_of(self, registry: str) -> dict[tuple[str, str], float]:
        """(repository, reference) -> last pull, of one registry, with what the log holds now."""
        self.refresh()
        with self._lock:
            return {(repo, ref): when for (name, repo, ref), when in self.last_pulls.items() if name == registry}

    def top(self, registry: str, count: int = 10) -> list[tuple[str, int]]:
        self.refresh()
        mine = Counter({repo: n for (name, repo), n in self.pulls.items() if name == registry})
        return sorted(mine.items(), key=lambda item: (-item[1], item[0]))[:count]


@dataclass
class StorageSizes:
    """Stored bytes per registry, walked again every `interval` seconds in a background thread."""

    registries: list[Registry]
    interval: float = 60.0
    sizes: dict[str, int] = field(default_factory=dict)
    measured_at: float = 0.0

    refresh_after: float = 10.0
    _walking: threading.Lock = field(default_factory=threading.Lock)

    def measure(self) -> None:
        if not self._walking.acquire(blocking=False):
            return  # a walk is under way already
        try:
            self.sizes = {r.name: stored_bytes(r.data_dir) for r in self.registries}
            self.measured_at = time.time()
        finally:
            self._walking.release()

    def start(self) -> None:
        def loop() -> None:
            while True:
                self.measure()
                time.sleep(self.interval)

        threading.Thread(target=loop, name="storage-sizes", daemon=True).start()

    def refresh_soon(self) -> None:
        """Walk again in the background when the last walk is older than `refresh_after`."""
        if time.time() - self.measured_at > self.refresh_after:
            threading.Thread(target=self.measure, name="storage-refresh", daemon=True).start()


class Stats:
    """Everything `/stats` and `/metrics` report."""

    def __init__(
        self,
        registries: list[Registry],
        access_log: AccessLog | None,
        sizes: StorageSizes,
        counters: Callable[[str], dict[str, dict[str, int]]] = proxy_counters,
    ) -> None:
        self.registries = registries
        self.access_log = access_log
        self.sizes = sizes
        self._counters = counters
        self.probe_answers: Counter[tuple[str, int]] = Counter()
        # What the size cap removed (eviction.Evictor's counters), by cache.
        self.evicted_images: Counter[str] = Counter()
        self.evicted_bytes: Counter[str] = Counter()

    def snapshot(self, top: int = 10) -> dict[str, Any]:
        self.sizes.refresh_soon()
        registries = []
        for registry in self.registries:
            entry: dict[str, Any] = {
                "name": registry.name,
                "kind": "cache" if registry.is_cache else "build",
                "storedBytes": self.sizes.sizes.get(registry.name),
                "capBytes": registry.cap_bytes,
                "topPulls": [{"repository": r, "pulls": n} for r, n in self.access_log.top(registry.name, top)]
                if self.access_log else [],
            }
            if registry.is_cache:
                entry["evictedImages"] = self.evicted_images[registry.name]
                entry["evictedBytes"] = self.evicted_bytes[registry.name]
                entry["proxy"] = reliable(self._counters(registry.debug_url), registry.counts_blob_misses)
                entry["hitRatio"] = hit_ratio(entry["proxy"])
            registries.append(entry)
        return {"registries": registries, "storageMeasuredAt": self.sizes.measured_at}


def hit_ratio(proxy: dict[str, dict[str, int]]) -> float | None:
    """1 - misses / requests of manifests; None before the first manifest request.

    Manifests, because every pull asks for one and every version counts them right: blob
    hits mostly never reach the cache (the front sends stored blobs itself), and 2.8 counts
    no blob miss at all. Not hits / requests: 2.8 counts every manifest it serves as a hit,
    fetched from the upstream or not; its misses are right.
    """
    manifest = proxy.get("manifest", {})
    requests, misses = manifest.get("requests", 0), manifest.get("misses", 0)
    return max(0.0, 1 - misses / requests) if requests else None


def prometheus_text(snapshot: dict[str, Any], probe_answers: Counter[tuple[str, int]]) -> str:
    """The snapshot in Prometheus' text format (names under registry_stack_)."""
    lines: list[str] = []

    def family(name: str, kind: str, text: str) -> None:
        lines.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}"])

    caches = [r for r in snapshot["registries"] if r["kind"] == "cache"]
    for field_name in PROXY_FIELDS.values():
        name = f"registry_stack_proxy_{field_name}_total"
        family(name, "counter", f"distribution's proxy counter {field_name} (expvar registry.proxy), per cache")
        for cache in caches:
            for kind, values in sorted(cache.get("proxy", {}).items()):
                if field_name in values:
                    lines.append(f'{name}{{upstream="{cache["name"]}",type="{kind}"}} {values[field_name]}')
    family("registry_stack_storage_bytes", "gauge", "bytes stored by a registry (its whole storage)")
    for registry in snapshot["registries"]:
        if registry["storedBytes"] is not None:
            lines.append(f'registry_stack_storage_bytes{{registry="{registry["name"]}"}} {registry["storedBytes"]}')
    family("registry_stack_storage_cap_bytes", "gauge", "cacheMaxSize of a cache, 0 when it has none")
    for cache in caches:
        lines.append(f'registry_stack_storage_cap_bytes{{registry="{cache["name"]}"}} {cache["capBytes"]}')
    for field_name, text in (("images", "images the size cap removed from a cache"),
                             ("bytes", "bytes the size cap removed from a cache")):
        name = f"registry_stack_evicted_{field_name}_total"
        family(name, "counter", text)
        for cache in caches:
            lines.append(f'{name}{{registry="{cache["name"]}"}} {cache.get(f"evicted{field_name.title()}", 0)}')
    family("registry_stack_probe_answers_total", "counter", "answers the agent gave for what a cache could not serve")
    for (upstream, status), count in sorted(probe_answers.items()):
        lines.append(f'registry_stack_probe_answers_total{{upstream="{upstream}",status="{status}"}} {count}')
    return "\n".join(lines) + "\n"
