"""The size cap of a cache (`cacheMaxSize`): past it, the least recently pulled images leave first.

distribution has no cap of its own (upstream issue 1140) and its proxy refuses deletes over
the API (405 UNSUPPORTED), so the agent removes files from the cache's storage, which it
mounts read-write for capped caches. What it relies on, from distribution's storage layout
(docs/content/storage-drivers/_index.md and registry/storage/paths.go):

    docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data                      every blob, once
    docker/registry/v2/repositories/<name>/_manifests/revisions/sha256/<hex>/link   a manifest
    docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link       a tag
    docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link        a blob of the repo

An *image* is what leaves as a whole: a manifest that no index of its repository lists,
with the manifests it lists (an index's platforms). Its last pull is the latest of the
front's access log (manifest requests by digest, or by a tag that now names it) and of its
revision link's modification time, which is when it was stored or, because the agent sets
it so, its last pull seen before (the log rolls; the link's time outlives the agent).

A pass, every few seconds: walk the storage; under the cap, done. Over it, take images in
order of last pull, oldest first, never a pinned one, until the blobs no longer referenced
by a remaining image make up the excess; then give back, newest first, every taken image
that frees nothing (its blobs are all shared with a remaining one). Removed: its tags, its
manifests' revision links, the repository's layer links to blobs no remaining image of that
repository uses, and the blob files no remaining image uses: a remaining image keeps every
file it needs, so it still pulls by digest, from the cache or its standby. Blobs that no
manifest references (left by a TTL expiry, say) go in the same order once older than
ORPHAN_GRACE_SECONDS: a blob being fetched is younger.

The registries must not remember what was removed: a capped cache and its standby run
without `storage.cache.blobdescriptor` (components/renderers.py), so a removed blob is
fetched again from the upstream (or 404 during an outage) instead of answered from memory.

Pure functions (`scan_storage` aside, which reads the files), tested directly; `Evictor`
runs them in a thread of the agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

V2 = os.path.join("docker", "registry", "v2")
ORPHAN_GRACE_SECONDS = 600.0
# Repository subfolders that hold no repository (a name never has a component starting with _).
_REPO_PARTS = ("_manifests", "_layers", "_uploads")


@dataclass(frozen=True)
class Manifest:
    """One manifest revision of a repository."""

    repository: str
    digest: str
    stored_at: float  # its revision link's mtime
    children: tuple[str, ...] = ()  # an index's manifests
    blobs: tuple[str, ...] = ()  # an image manifest's config and layers


@dataclass
class Storage:
    """What a cache's storage holds, as a pass sees it."""

    blob_sizes: dict[str, int] = field(default_factory=dict)
    blob_times: dict[str, float] = field(default_factory=dict)
    manifests: dict[tuple[str, str], Manifest] = field(default_factory=dict)
    tags: dict[tuple[str, str], str] = field(default_factory=dict)  # (repository, tag) -> digest
    layer_links: dict[str, set[str]] = field(default_factory=dict)  # repository -> linked blobs
    total_bytes: int = 0  # every file, blobs or not


@dataclass(frozen=True)
class Image:
    """What leaves as a whole: a top manifest with what it lists, or an orphan blob (repository "")."""

    repository: str
    digest: str
    manifests: frozenset[str]
    blobs: frozenset[str]  # every blob file it needs, its manifests' own included
    last_pull: float
    pinned: bool = False

    @property
    def name(self) -> str:
        return f"{self.repository}@{self.digest}" if self.repository else f"unreferenced blob {self.digest}"


@dataclass(frozen=True)
class Plan:
    cap_bytes: int
    total_bytes: int
    victims: tuple[Image, ...] = ()
    freed_bytes: int = 0
    removals: tuple[str, ...] = ()  # paths under the storage root, in the order to remove them
    pinned_bytes: int = 0

    @property
    def over_cap(self) -> bool:
        return self.total_bytes > self.cap_bytes

    @property
    def reaches_cap(self) -> bool:
        return self.total_bytes - self.freed_bytes <= self.cap_bytes


# -- pins -------------------------------------------------------------------------------------


def parse_pins(text: str) -> tuple[str, ...]:
    """The references of a pins file: the same rule as components/pins.py parse_pins_file."""
    return tuple(
        line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )


def split_reference(reference: str) -> tuple[str, str]:
    """`library/alpine:3.20` -> (library/alpine, 3.20); `a/b@sha256:..` -> (a/b, sha256:..)."""
    if "@" in reference:
        name, digest = reference.split("@", 1)
        return name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name, digest
    name, colon, tag = reference.rpartition(":")
    if not colon or "/" in tag:
        return reference, "latest"
    return name, tag


def pinned_manifests(storage: Storage, references: Iterable[str]) -> set[tuple[str, str]]:
    """(repository, digest) of every pinned reference; a tag pins what it names in this storage."""
    pinned = set()
    for reference in references:
        repository, ref = split_reference(reference)
        digest = ref if ref.startswith("sha256:") else storage.tags.get((repository, ref))
        if digest:
            pinned.add((repository, digest))
    return pinned


# -- images and their last pulls --------------------------------------------------------------


def _covered(storage: Storage, repository: str, digest: str) -> set[str]:
    """The manifest and, for an index, every manifest it lists that the repository holds."""
    seen: set[str] = set()
    todo = [digest]
    while todo:
        current = todo.pop()
        manifest = storage.manifests.get((repository, current))
        if manifest is None or current in seen:
            continue
        seen.add(current)
        todo.extend(manifest.children)
    return seen


def last_pulls_by_digest(storage: Storage, pulls: Mapping[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """(repository, digest) -> the latest of its revision link's time and its pulls, by digest or by a tag."""
    times = {key: manifest.stored_at for key, manifest in storage.manifests.items()}
    for (repository, reference), when in pulls.items():
        digest = reference if reference.startswith("sha256:") else storage.tags.get((repository, reference))
        key = (repository, digest or "")
        if key in times and when > times[key]:
            times[key] = when
    return times


def images_of(
    storage: Storage, pulls: Mapping[tuple[str, str], float], pins: Iterable[str], now: float,
) -> list[Image]:
    """Every image (and old orphan blob) of the storage with its last pull and whether it is pinned."""
    times = last_pulls_by_digest(storage, pulls)
    pinned = pinned_manifests(storage, pins)
    listed = {(m.repository, child) for m in storage.manifests.values() for child in m.children}
    images = []
    referenced: set[str] = set()
    for (repository, digest) in sorted(storage.manifests):
        if (repository, digest) in listed:  # an index of the repository holds it
            continue
        covered = _covered(storage, repository, digest)
        blobs = set(covered)
        for child in covered:
            blobs.update(storage.manifests[(repository, child)].blobs)
        referenced |= blobs
        images.append(Image(
            repository=repository, digest=digest, manifests=frozenset(covered), blobs=frozenset(blobs),
            last_pull=max(times[(repository, d)] for d in covered),
            pinned=any((repository, d) in pinned for d in covered),
        ))
    for blob, stored in sorted(storage.blob_times.items()):
        if blob not in referenced and now - stored > ORPHAN_GRACE_SECONDS:
            images.append(Image("", blob, frozenset(), frozenset({blob}), stored))
    return images


# -- the choice ------------------------------------------------------------------------------


def choose_victims(images: list[Image], blob_sizes: Mapping[str, int], total: int, cap: int) -> tuple[list[Image], int]:
    """Oldest pull first, pinned never, until what no remaining image needs covers the excess.

    Returns the images to remove and the bytes their removal frees. A taken image that frees
    nothing (its blobs are all in remaining images) is given back, newest first.
    """
    refs: Counter[str] = Counter(blob for image in images for blob in image.blobs)
    victims: list[Image] = []
    freed = 0
    for image in sorted((i for i in images if not i.pinned), key=lambda i: (i.last_pull, i.repository, i.digest)):
        if total - freed <= cap:
            break
        victims.append(image)
        for blob in image.blobs:
            refs[blob] -= 1
            if refs[blob] == 0:
                freed += blob_sizes.get(blob, 0)
    for image in reversed(list(victims)):
        cost = sum(blob_sizes.get(blob, 0) for blob in image.blobs if refs[blob] == 0)
        if total - freed + cost <= cap:
            victims.remove(image)
            freed -= cost
            for blob in image.blobs:
                refs[blob] += 1
    return victims, freed


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _repo(repository: str, *parts: str) -> str:
    return os.path.join(V2, "repositories", repository, *parts)


def blob_path(digest: str) -> str:
    hex_digest = _hex(digest)
    return os.path.join(V2, "blobs", "sha256", hex_digest[:2], hex_digest)


def removals(storage: Storage, images: list[Image], victims: list[Image]) -> list[str]:
    """The paths that remove `victims` and nothing a remaining image needs: tags, manifests,
    layer links, blob files, in that order (a client never finds a tag whose manifest is gone)."""
    chosen = {(v.repository, v.digest) for v in victims}
    kept = [i for i in images if (i.repository, i.digest) not in chosen]
    kept_manifests: dict[str, set[str]] = {}
    kept_repo_blobs: dict[str, set[str]] = {}
    for image in kept:
        kept_manifests.setdefault(image.repository, set()).update(image.manifests)
        kept_repo_blobs.setdefault(image.repository, set()).update(image.blobs)
    kept_blobs = {blob for image in kept for blob in image.blobs}
    tags, revisions, links, blobs = [], [], [], []
    for victim in victims:
        gone = victim.manifests - kept_manifests.get(victim.repository, set())
        for (repository, tag), digest in sorted(storage.tags.items()):
            if repository != victim.repository:
                continue
            if digest in gone:
                tags.append(_repo(repository, "_manifests", "tags", tag))
            else:  # a remaining tag's history of what it named
                tags += [_repo(repository, "_manifests", "tags", tag, "index", "sha256", _hex(d)) for d in sorted(gone)]
        revisions += [_repo(victim.repository, "_manifests", "revisions", "sha256", _hex(d)) for d in sorted(gone)]
        for blob in sorted(victim.blobs - kept_blobs):
            repositories = [victim.repository] if victim.repository else sorted(
                r for r, linked in storage.layer_links.items() if blob in linked
            )
            links += [
                _repo(r, "_layers", "sha256", _hex(blob)) for r in repositories
                if blob in storage.layer_links.get(r, set()) and blob not in kept_repo_blobs.get(r, set())
            ]
            blobs.append(blob_path(blob))
        for blob in sorted((victim.blobs & kept_blobs) - kept_repo_blobs.get(victim.repository, set())):
            if victim.repository and blob in storage.layer_links.get(victim.repository, set()):
                links.append(_repo(victim.repository, "_layers", "sha256", _hex(blob)))
    return list(dict.fromkeys(tags + revisions + links + blobs))


def plan_eviction(
    storage: Storage, pulls: Mapping[tuple[str, str], float], pins: Iterable[str], cap: int, now: float,
) -> Plan:
    """What to remove so the storage is under `cap`: pure, from what a scan found."""
    if storage.total_bytes <= cap:
        return Plan(cap, storage.total_bytes)
    images = images_of(storage, pulls, pins, now)
    victims, freed = choose_victims(images, storage.blob_sizes, storage.total_bytes, cap)
    pinned_blobs = {blob for image in images if image.pinned for blob in image.blobs}
    return Plan(
        cap_bytes=cap, total_bytes=storage.total_bytes, victims=tuple(victims), freed_bytes=freed,
        removals=tuple(removals(storage, images, victims)),
        pinned_bytes=sum(storage.blob_sizes.get(blob, 0) for blob in pinned_blobs),
    )


# -- the files -------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _references(blob_file: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(listed manifests, config + layers) of a manifest blob; () for what is not a manifest."""
    try:
        with open(blob_file, "rb") as handle:
            document = json.loads(handle.read(4 * 2**20))
    except (OSError, ValueError):
        return (), ()
    if not isinstance(document, dict):
        return (), ()

    def digests(entries: object) -> tuple[str, ...]:
        items = entries if isinstance(entries, list) else []
        found = (str(e.get("digest", "")) for e in items if isinstance(e, dict))
        return tuple(d for d in found if d.startswith("sha256:"))

    config = document.get("config")
    configs = digests([config]) if isinstance(config, dict) else ()
    return digests(document.get("manifests")), configs + digests(document.get("layers"))


def scan_storage(root: str) -> Storage:
    """Read a cache's storage: blob sizes, manifests and what they reference, tags, layer links."""
    storage = Storage()
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if not os.path.islink(path):
                storage.total_bytes += info.st_size
    blobs_root = os.path.join(root, V2, "blobs", "sha256")
    for prefix in _listdir(blobs_root):
        for hex_digest in _listdir(os.path.join(blobs_root, prefix)):
            try:
                info = os.stat(os.path.join(blobs_root, prefix, hex_digest, "data"))
            except OSError:
                continue
            storage.blob_sizes[f"sha256:{hex_digest}"] = info.st_size
            storage.blob_times[f"sha256:{hex_digest}"] = info.st_mtime
    repositories = os.path.join(root, V2, "repositories")
    for folder, subfolders, _ in os.walk(repositories):
        if "_manifests" in subfolders or "_layers" in subfolders:
            _scan_repository(root, storage, os.path.relpath(folder, repositories).replace(os.sep, "/"))
        subfolders[:] = [s for s in subfolders if s not in _REPO_PARTS]
    return storage


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _scan_repository(root: str, storage: Storage, repository: str) -> None:
    base = os.path.join(root, _repo(repository))
    revisions = os.path.join(base, "_manifests", "revisions", "sha256")
    for hex_digest in _listdir(revisions):
        link = os.path.join(revisions, hex_digest, "link")
        try:
            stored_at = os.stat(link).st_mtime
        except OSError:
            continue
        digest = f"sha256:{hex_digest}"
        children, blobs = _references(os.path.join(root, blob_path(digest), "data"))
        storage.manifests[(repository, digest)] = Manifest(repository, digest, stored_at, children, blobs)
    tags = os.path.join(base, "_manifests", "tags")
    for tag in _listdir(tags):
        digest = _read(os.path.join(tags, tag, "current", "link"))
        if digest.startswith("sha256:"):
            storage.tags[(repository, tag)] = digest
    layers = os.path.join(base, "_layers", "sha256")
    storage.layer_links[repository] = {f"sha256:{h}" for h in _listdir(layers)}


def remove(root: str, paths: Iterable[str]) -> None:
    """Remove each path (a folder or a file) under root; what is gone already is skipped."""
    for path in paths:
        target = os.path.join(root, path)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target, ignore_errors=True)
        elif os.path.lexists(target):
            with contextlib.suppress(OSError):
                os.remove(target)


def record_pulls(root: str, storage: Storage, pulls: Mapping[tuple[str, str], float]) -> None:
    """Set each revision link's mtime to its last pull: the record outlives the rolled access log."""
    for (repository, digest), when in last_pulls_by_digest(storage, pulls).items():
        manifest = storage.manifests[(repository, digest)]
        if when > manifest.stored_at + 1:
            link = os.path.join(root, _repo(repository, "_manifests", "revisions", "sha256", _hex(digest), "link"))
            try:
                os.utime(link, (when, when))
            except OSError:
                continue
            storage.manifests[(repository, digest)] = Manifest(
                repository, digest, when, manifest.children, manifest.blobs,
            )


# -- the loop --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CappedCache:
    name: str  # the upstream's name, as the access log's hosts name it
    data_dir: str
    cap_bytes: int
    pins_path: str = ""


def _size(size: int) -> str:
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024:
            return f"{size} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _log_line(line: str) -> None:
    sys.stderr.write(line + "\n")


class Evictor:
    """Keeps each capped cache under its cap, every `interval` seconds, in a thread of the agent."""

    def __init__(
        self,
        caches: list[CappedCache],
        pulls: Callable[[str], Mapping[tuple[str, str], float]],
        interval: float = 20.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.caches = caches
        self.pulls = pulls  # registry name -> (repository, reference) -> last pull
        self.interval = interval
        self.log = log or _log_line
        self.evicted_images: Counter[str] = Counter()
        self.evicted_bytes: Counter[str] = Counter()
        self._stuck: dict[str, int] = {}  # cache -> pinned bytes when last said to be stuck over its cap
        self._lock = threading.Lock()

    def run_once(self, now: float | None = None) -> list[Plan]:
        with self._lock:
            return [self._pass(cache, time.time() if now is None else now) for cache in self.caches]

    def _pass(self, cache: CappedCache, now: float) -> Plan:
        storage = scan_storage(cache.data_dir)
        pulls = self.pulls(cache.name)
        record_pulls(cache.data_dir, storage, pulls)
        plan = plan_eviction(storage, pulls, parse_pins(_read(cache.pins_path)) if cache.pins_path else (),
                             cache.cap_bytes, now)
        if not plan.over_cap:
            self._stuck.pop(cache.name, None)
            return plan
        if not plan.victims:
            # Over the cap with nothing to take (pins fill it): said once, not every pass.
            if self._stuck.get(cache.name) != plan.pinned_bytes:
                self._stuck[cache.name] = plan.pinned_bytes
                self.log(
                    f"evict: {cache.name}: {_size(plan.total_bytes)} stored, over the cap of "
                    f"{_size(plan.cap_bytes)}, and nothing left to remove: pinned images hold "
                    f"{_size(plan.pinned_bytes)} (raise cacheMaxSize or pin less)"
                )
            return plan
        self.log(f"evict: {cache.name}: {_size(plan.total_bytes)} stored, over the cap of {_size(plan.cap_bytes)}")
        for victim in plan.victims:
            self.log(f"evict: {cache.name}: removing {victim.name} (last pulled {_when(victim.last_pull)})")
        remove(cache.data_dir, plan.removals)
        self.evicted_images[cache.name] += sum(1 for v in plan.victims if v.repository)
        self.evicted_bytes[cache.name] += plan.freed_bytes
        after = plan.total_bytes - plan.freed_bytes
        self.log(f"evict: {cache.name}: freed {_size(plan.freed_bytes)}, about {_size(after)} stored now")
        if not plan.reaches_cap:
            self.log(
                f"evict: {cache.name}: still over the cap: pinned images alone hold {_size(plan.pinned_bytes)} "
                "(raise cacheMaxSize or pin less)"
            )
        return plan

    def start(self) -> None:
        def loop() -> None:
            while True:
                try:
                    self.run_once()
                except Exception as error:  # one bad pass must not end the loop
                    self.log(f"evict: pass failed: {error!r}")
                time.sleep(self.interval)

        threading.Thread(target=loop, name="eviction", daemon=True).start()
