"""The size cap (cacheMaxSize): its parsing, the choice of what to evict, the files it removes,
the configs it renders (distribution 2.8 and 3.x), and what the program declares for it.

The storage layout the fixtures write is distribution's (registry/storage/paths.go): blobs once
under blobs/sha256/<2>/<hex>/data, per repository the manifest revisions, tags and layer links.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from components import agent, metrics, pins, renderers
from components.agent_app import eviction
from components.agent_app.eviction import Image, Storage, choose_victims, plan_eviction, scan_storage
from components.agent_app.stats import AccessLog, Registry, Stats, StorageSizes, prometheus_text
from components.cache_size import parse_size
from components.settings import ConfigError
from tests import harness

MIB = 2**20
IMAGE_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


# -- cacheMaxSize: parsing and validation -------------------------------------------------------


@pytest.mark.parametrize(("text", "size"), [
    ("50GiB", 50 * 2**30), ("500MiB", 500 * MIB), ("1.5TiB", int(1.5 * 2**40)), ("2GB", 2 * 10**9),
    ("3 MiB", 3 * MIB), ("10gib", 10 * 2**30), ("1MiB", MIB), ("", 0),
])
def test_sizes_parse_in_binary_and_decimal_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "says"), [
    ("50", "a number and a unit"), ("fifty GiB", "a number and a unit"), ("50XB", "unknown unit 'XB'"),
    ("512KiB", "at least 1MiB"), ("0GiB", "at least 1MiB"),
])
def test_a_bad_size_names_the_key_the_value_and_the_fix(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as error:
        harness.settings({"enableBuild": False, "cacheMaxSize": text})
    message = str(error.value)
    assert message.startswith(f"registry-stack:cacheMaxSize={text!r} is invalid")
    assert says in message


def test_a_cap_without_a_cache_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"cacheMaxSize='5GiB' but registry-stack:enableCache is false"):
        harness.settings({"enableCache": False, "users": ["a:password-1"], "cacheMaxSize": "5GiB"},
                         secret_keys=("users",))


def test_each_cache_gets_the_cap_and_on_3x_the_ttl_goes_unless_the_upstream_sets_one() -> None:
    settings = harness.settings({
        "enableBuild": False, "cacheMaxSize": "50GiB", "registryImage": "registry:3.1.1",
        "upstreams": ["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io;ttl=72h"],
    })
    assert [(u.name, u.max_bytes, u.ttl) for u in settings.upstreams] == [
        ("docker", 50 * 2**30, "0s"), ("ghcr", 50 * 2**30, "72h")]
    uncapped = harness.settings({"enableBuild": False, "registryImage": "registry:3.1.1"})
    assert [(u.max_bytes, u.ttl) for u in uncapped.upstreams] == [(0, "")]


def test_on_2x_the_cap_leaves_the_fixed_ttl_alone() -> None:
    settings = harness.settings({"enableBuild": False, "cacheMaxSize": "5GiB", "registryImage": "registry:2.8.3"})
    assert [(u.max_bytes, u.ttl) for u in settings.upstreams] == [(5 * 2**30, "")]


# -- rendered files ---------------------------------------------------------------------------


def _capped(image: str = "registry:3.1.1", **values: object) -> object:
    return harness.settings({"enableBuild": False, "cacheMaxSize": "5MiB", "registryImage": image, **values})


def test_a_capped_3x_cache_has_expiry_off_and_no_descriptor_cache() -> None:
    # distribution 3.1 configuration.md: `proxy.ttl` "set to 0 to disable cache expiration";
    # `storage.cache` is optional ("uses the blobdescriptor field if configured").
    (upstream,) = _capped().upstreams  # type: ignore[attr-defined]
    cache = json.loads(renderers.cache_registry_config(upstream, 3))
    assert cache["proxy"] == {"remoteurl": "https://registry-1.docker.io", "ttl": "0s"}
    assert "cache" not in cache["storage"]
    assert cache["storage"]["delete"] == {"enabled": True}
    standby = json.loads(renderers.standby_registry_config(upstream, 3))
    assert "cache" not in standby["storage"] and standby["storage"]["maintenance"]["readonly"]["enabled"]


def test_an_uncapped_cache_keeps_the_descriptor_cache_and_the_default_ttl() -> None:
    (upstream,) = harness.settings({"enableBuild": False, "registryImage": "registry:3.1.1"}).upstreams
    cache = json.loads(renderers.cache_registry_config(upstream, 3))
    assert cache["storage"]["cache"] == {"blobdescriptor": "inmemory"}
    assert "ttl" not in cache["proxy"]
    assert json.loads(renderers.standby_registry_config(upstream, 3))["storage"]["cache"] == {
        "blobdescriptor": "inmemory"}


def test_a_capped_2x_cache_renders_no_ttl_which_2x_does_not_know() -> None:
    (upstream,) = _capped("registry:2.8.3").upstreams  # type: ignore[attr-defined]
    cache = json.loads(renderers.cache_registry_config(upstream, 2))
    assert "ttl" not in cache["proxy"] and "cache" not in cache["storage"]


def test_a_cap_turns_the_access_log_on_without_the_metrics_endpoint() -> None:
    front = json.loads(renderers.front_config(_capped(), []))  # type: ignore[arg-type]
    server = front["apps"]["http"]["servers"]["registry"]
    assert server["logs"] == {"default_logger_name": metrics.ACCESS_LOGGER}
    assert front["logging"]["logs"][metrics.ACCESS_LOGGER]["writer"]["filename"] == metrics.ACCESS_LOG
    assert "metrics" not in front["apps"]["http"]["servers"]  # no listener without metricsPort
    plain = json.loads(renderers.front_config(harness.settings({"enableBuild": False}), []))
    assert "logging" not in plain and "logs" not in plain["apps"]["http"]["servers"]["registry"]


def test_the_agent_config_carries_each_cap_its_pins_and_the_access_log() -> None:
    settings = _capped(upstreams=["docker=https://registry-1.docker.io", "quay=https://quay.io"])
    config = json.loads(agent.agent_config(settings, {}))  # type: ignore[arg-type]
    by_name = {entry["name"]: entry for entry in config["registries"]}
    assert by_name["docker"]["capBytes"] == 5 * MIB and by_name["quay"]["capBytes"] == 5 * MIB
    assert by_name["docker"]["pinsPath"] == "/etc/registry-stack/pins.d/docker"
    assert by_name["quay"]["pinsPath"] == "/etc/registry-stack/pins.d/quay"
    assert config["eviction"] == {"intervalSeconds": agent.EVICTION_INTERVAL_SECONDS}
    assert config["accessLog"]["path"] == metrics.ACCESS_LOG


def test_each_capped_cache_gets_its_pins_file_as_components_pins_renders_it() -> None:
    settings = _capped()
    (upstream,) = settings.upstreams  # type: ignore[attr-defined]
    pinned = replace(settings, upstreams=(replace(upstream, pins=("library/alpine:3.20", "library/busybox:1")),))
    files = agent.pins_files(pinned)  # type: ignore[arg-type]
    assert files == {"/etc/registry-stack/pins.d/docker": pins.pins_file(["library/alpine:3.20", "library/busybox:1"])}
    # The agent reads it with its own (stdlib) parser: the same references.
    text = files["/etc/registry-stack/pins.d/docker"]
    assert eviction.parse_pins(text) == pins.parse_pins_file(text) == ("library/alpine:3.20", "library/busybox:1")


def test_the_program_mounts_a_capped_cache_writable_in_the_agent_and_uploads_its_pins() -> None:
    declaration = harness.declare({"enableBuild": False, "cacheMaxSize": "5GiB"})
    agent_inputs = declaration.containers["registry-stack-dev-agent"].plain_inputs
    volumes = {v["volumeName"]: v for v in agent_inputs["volumes"]}
    assert not volumes["registry-stack-dev-cache-data"].get("readOnly")  # it evicts from there
    assert volumes["registry-stack-dev-logs-data"]["readOnly"]
    uploads = {u["file"] for u in agent_inputs["uploads"]}
    assert "/etc/registry-stack/pins.d/docker" in uploads
    front_volumes = {v["volumeName"]: v for v in declaration.containers["registry-stack-dev-front"].plain_inputs[
        "volumes"]}
    assert front_volumes["registry-stack-dev-cache-data"]["readOnly"]
    assert not front_volumes["registry-stack-dev-logs-data"].get("readOnly")  # the front writes the log


def test_without_a_cap_the_agent_sees_the_cache_read_only() -> None:
    declaration = harness.declare({"enableBuild": False})
    agent_inputs = declaration.containers["registry-stack-dev-agent"].plain_inputs
    assert all(v["readOnly"] for v in agent_inputs["volumes"])
    assert not any(u["file"].startswith(agent.PINS_DIR) for u in agent_inputs["uploads"])


# -- the choice: a pure function of images, sizes and the cap -----------------------------------


def _image(name: str, last_pull: float, blobs: set[str], pinned: bool = False) -> Image:
    return Image(f"library/{name}", f"sha256:{name}", frozenset({f"sha256:{name}"}),
                 frozenset(blobs | {f"sha256:{name}"}), last_pull, pinned)


def test_the_oldest_pull_goes_first_and_only_as_many_as_the_cap_needs() -> None:
    images = [_image("a", 30, {"la"}), _image("b", 10, {"lb"}), _image("c", 20, {"lc"})]
    sizes = {"la": 4, "lb": 4, "lc": 4}
    victims, freed = choose_victims(images, sizes, total=12, cap=8)
    assert [v.repository for v in victims] == ["library/b"] and freed == 4
    victims, freed = choose_victims(images, sizes, total=12, cap=4)
    assert [v.repository for v in victims] == ["library/b", "library/c"] and freed == 8


def test_a_pinned_image_is_never_taken_even_when_it_is_the_oldest() -> None:
    images = [_image("p", 1, {"lp"}, pinned=True), _image("a", 5, {"la"}), _image("b", 9, {"lb"})]
    victims, _ = choose_victims(images, {"lp": 4, "la": 4, "lb": 4}, total=12, cap=8)
    assert [v.repository for v in victims] == ["library/a"]
    victims, freed = choose_victims(images, {"lp": 4, "la": 4, "lb": 4}, total=12, cap=2)
    assert {v.repository for v in victims} == {"library/a", "library/b"} and freed == 8  # still over: pins stay


def test_a_shared_layer_is_freed_only_with_the_last_image_that_uses_it() -> None:
    # a and b share "base"; c is alone. Taking a frees only its own layer.
    images = [_image("a", 1, {"base", "la"}), _image("b", 2, {"base", "lb"}), _image("c", 3, {"lc"})]
    sizes = {"base": 10, "la": 1, "lb": 1, "lc": 1}
    victims, freed = choose_victims(images, sizes, total=13, cap=3)
    assert [v.repository for v in victims] == ["library/a", "library/b"] and freed == 12


def test_an_image_that_frees_nothing_is_given_back() -> None:
    # "old" shares everything with "twin" (same layers, another name); taking it alone frees nothing,
    # so once "big" made room, "old" returns.
    images = [_image("old", 1, {"shared"}), _image("big", 2, {"lbig"}), _image("twin", 3, {"shared"})]
    sizes = {"shared": 5, "lbig": 8, "sha256:old": 0, "sha256:big": 0, "sha256:twin": 0}
    victims, freed = choose_victims(images, sizes, total=13, cap=6)
    assert [v.repository for v in victims] == ["library/big"] and freed == 8


# -- the storage: scanned, planned, removed ------------------------------------------------------


class Registry2:
    """Writes content as distribution's filesystem driver lays it out."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.v2 = root / "docker" / "registry" / "v2"

    def blob(self, data: bytes, when: float = 1000.0) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        hex_digest = digest.split(":")[1]
        path = self.v2 / "blobs" / "sha256" / hex_digest[:2] / hex_digest / "data"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (when, when))
        return digest

    def _link(self, path: Path, digest: str, when: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(digest)
        os.utime(path, (when, when))

    def image(self, repository: str, tag: str | None, layer_sizes: list[int], when: float, seed: str = "") -> str:
        layers = [self.blob(os.urandom(size) if not seed else (seed * size).encode()[:size], when)
                  for size in layer_sizes]
        config = self.blob(json.dumps({"seed": seed or os.urandom(4).hex(), "repo": repository}).encode(), when)
        for digest in [*layers, config]:
            self._link(self._repo(repository) / "_layers" / "sha256" / digest.split(":")[1] / "link", digest, when)
        manifest = {"schemaVersion": 2, "mediaType": IMAGE_TYPE,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 1},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": 1}
                               for d in layers]}
        return self._manifest(repository, tag, manifest, when)

    def index(self, repository: str, tag: str, children: list[str], when: float) -> str:
        document = {"schemaVersion": 2, "mediaType": INDEX_TYPE,
                    "manifests": [{"mediaType": IMAGE_TYPE, "digest": d, "size": 1} for d in children]}
        return self._manifest(repository, tag, document, when)

    def _manifest(self, repository: str, tag: str | None, document: dict, when: float) -> str:
        digest = self.blob(json.dumps(document).encode(), when)
        hex_digest = digest.split(":")[1]
        self._link(self._repo(repository) / "_manifests" / "revisions" / "sha256" / hex_digest / "link", digest, when)
        if tag:
            tags = self._repo(repository) / "_manifests" / "tags" / tag
            self._link(tags / "current" / "link", digest, when)
            self._link(tags / "index" / "sha256" / hex_digest / "link", digest, when)
        return digest

    def _repo(self, repository: str) -> Path:
        return self.v2 / "repositories" / repository

    def files(self) -> set[str]:
        return {str(p.relative_to(self.v2)) for p in self.v2.rglob("*") if p.is_file()}

    def holds_whole(self, storage: Storage, repository: str, digest: str) -> bool:
        """The manifest and every blob it (or, for an index, its children) needs are on disk with their links."""
        manifest = storage.manifests.get((repository, digest))
        if manifest is None:
            return False
        files = self.files()
        needed = [digest, *manifest.blobs]
        ok = all(f"blobs/sha256/{d[7:9]}/{d[7:]}/data" in files for d in needed)
        ok &= all(f"repositories/{repository}/_layers/sha256/{d[7:]}/link" in files for d in manifest.blobs)
        return ok and all(self.holds_whole(storage, repository, child) for child in manifest.children)


@pytest.fixture
def registry(tmp_path: Path) -> Registry2:
    return Registry2(tmp_path)


NOW = 10_000.0


def test_scanning_finds_blobs_manifests_tags_links_and_the_total(registry: Registry2) -> None:
    digest = registry.image("library/app", "1", [1000, 2000], when=100)
    storage = scan_storage(str(registry.root))
    assert storage.tags == {("library/app", "1"): digest}
    manifest = storage.manifests[("library/app", digest)]
    assert manifest.stored_at == 100 and len(manifest.blobs) == 3 and not manifest.children
    assert storage.layer_links["library/app"] == set(manifest.blobs)
    assert storage.total_bytes == sum(p.stat().st_size for p in registry.root.rglob("*") if p.is_file())


def test_past_the_cap_the_least_recently_pulled_image_is_removed_cleanly(registry: Registry2) -> None:
    a = registry.image("library/a", "1", [MIB], when=100)
    b = registry.image("library/b", "1", [MIB], when=200)
    c = registry.image("library/c", "1", [MIB], when=300)
    # a was stored first but pulled last (by tag); b by digest at 400; c never since it was stored.
    pulls = {("library/a", "1"): 500.0, ("library/b", b): 400.0}
    storage = scan_storage(str(registry.root))
    plan = plan_eviction(storage, pulls, (), cap=int(2.5 * MIB), now=NOW)
    assert [v.repository for v in plan.victims] == ["library/c"]
    eviction.remove(str(registry.root), plan.removals)
    after = scan_storage(str(registry.root))
    assert ("library/c", c) not in after.manifests and ("library/c", "1") not in after.tags
    assert not any("library/c" in path and ("_layers" in path or "_manifests" in path) for path in registry.files())
    assert after.total_bytes <= 2.5 * MIB
    assert registry.holds_whole(after, "library/a", a) and registry.holds_whole(after, "library/b", b)


def test_a_layer_shared_with_a_remaining_image_stays_while_the_repositorys_own_link_goes(registry: Registry2) -> None:
    old = registry.image("team/old", "1", [MIB, MIB // 2], when=100, seed="s")  # its first layer is new's layer
    new = registry.image("team/new", "1", [MIB], when=200, seed="s")
    storage = scan_storage(str(registry.root))
    (shared,) = set(storage.manifests[("team/old", old)].blobs) & set(storage.manifests[("team/new", new)].blobs)
    plan = plan_eviction(storage, {("team/new", "1"): 400.0}, (), cap=int(1.2 * MIB), now=NOW)
    assert [v.repository for v in plan.victims] == ["team/old"]
    assert MIB // 2 <= plan.freed_bytes < MIB  # its own layer, not the shared one
    eviction.remove(str(registry.root), plan.removals)
    after = scan_storage(str(registry.root))
    assert ("team/old", old) not in after.manifests and ("team/old", "1") not in after.tags
    files = registry.files()
    assert f"blobs/sha256/{shared[7:9]}/{shared[7:]}/data" in files  # new still needs it
    assert f"repositories/team/old/_layers/sha256/{shared[7:]}/link" not in files
    assert registry.holds_whole(after, "team/new", new)


def test_pins_by_tag_and_by_digest_keep_images_and_an_index_pins_its_platforms(registry: Registry2) -> None:
    amd = registry.image("library/multi", None, [MIB], when=100)
    arm = registry.image("library/multi", None, [MIB], when=100)
    index = registry.index("library/multi", "2", [amd, arm], when=100)
    single = registry.image("library/single", "1", [MIB], when=110)
    fresh = registry.image("library/fresh", "1", [MIB], when=120)
    storage = scan_storage(str(registry.root))
    images = {i.repository: i for i in eviction.images_of(storage, {}, (), NOW)}
    assert images["library/multi"].manifests == {index, amd, arm}  # one image: the index and its platforms
    pinned = ["library/multi:2", f"library/single@{single}"]
    plan = plan_eviction(storage, {}, pinned, cap=MIB, now=NOW)
    assert [v.repository for v in plan.victims] == ["library/fresh"]
    assert not plan.reaches_cap and plan.pinned_bytes >= 3 * MIB
    eviction.remove(str(registry.root), plan.removals)
    after = scan_storage(str(registry.root))
    assert registry.holds_whole(after, "library/multi", index) and registry.holds_whole(after, "library/single", single)
    assert ("library/fresh", fresh) not in after.manifests


def test_a_platform_pulled_by_digest_keeps_its_index_recent(registry: Registry2) -> None:
    amd = registry.image("library/multi", None, [MIB], when=100)
    index = registry.index("library/multi", "2", [amd], when=100)
    other = registry.image("library/other", "1", [MIB], when=200)
    storage = scan_storage(str(registry.root))
    plan = plan_eviction(storage, {("library/multi", amd): 900.0}, (), cap=int(1.5 * MIB), now=NOW)
    assert [(v.repository, v.digest) for v in plan.victims] == [("library/other", other)]
    assert index  # kept with its platform


def test_old_unreferenced_blobs_go_in_turn_and_fresh_ones_stay(registry: Registry2) -> None:
    registry.image("library/kept", "1", [MIB // 2], when=NOW - 5)
    old = registry.blob(os.urandom(MIB), when=NOW - eviction.ORPHAN_GRACE_SECONDS - 10)
    fresh = registry.blob(os.urandom(MIB), when=NOW - 1)  # being fetched, its manifest is not there yet
    storage = scan_storage(str(registry.root))
    plan = plan_eviction(storage, {}, (), cap=2 * MIB, now=NOW)
    assert [v.digest for v in plan.victims] == [old]
    assert plan.removals == (eviction.blob_path(old),)
    assert fresh in storage.blob_sizes


def test_pulls_are_recorded_in_the_revision_links_time_so_they_outlive_the_log(registry: Registry2) -> None:
    digest = registry.image("library/app", "1", [100], when=100)
    storage = scan_storage(str(registry.root))
    eviction.record_pulls(str(registry.root), storage, {("library/app", "1"): 5000.0})
    assert scan_storage(str(registry.root)).manifests[("library/app", digest)].stored_at == 5000.0


def test_references_split_into_repository_and_tag_or_digest() -> None:
    digest = "sha256:" + "a" * 64
    assert eviction.split_reference("library/alpine:3.20") == ("library/alpine", "3.20")
    assert eviction.split_reference(f"library/alpine@{digest}") == ("library/alpine", digest)
    assert eviction.split_reference(f"library/alpine:3.20@{digest}") == ("library/alpine", digest)
    assert eviction.split_reference("library/alpine") == ("library/alpine", "latest")


# -- the loop in the agent ---------------------------------------------------------------------


def _log_line(host: str, uri: str, ts: float) -> str:
    return json.dumps({"ts": ts, "status": 200, "request": {"method": "GET", "host": host, "uri": uri,
                                                             "remote_ip": "10.0.0.9"},
                       "resp_headers": {"Content-Type": [IMAGE_TYPE]}}) + "\n"


def test_the_agent_evicts_by_the_access_log_and_counts_what_it_removed(registry: Registry2, tmp_path: Path) -> None:
    a = registry.image("library/a", "1", [MIB], when=100)
    b = registry.image("library/b", "1", [MIB], when=100)
    log = tmp_path / "access.log"
    log.write_text(_log_line("docker-cache.x", "/v2/library/a/manifests/1", 100.0)
                   + _log_line("docker-cache.x", f"/v2/library/b/manifests/{b}", 200.0)
                   + _log_line("docker-cache.x", "/v2/library/a/manifests/1", 300.0))
    access = AccessLog(str(log), {"docker-cache.x": "docker"})
    pins_file = tmp_path / "pins"
    pins_file.write_text(pins.pins_file([]))
    lines: list[str] = []
    evictor = eviction.Evictor([eviction.CappedCache("docker", str(registry.root), int(1.5 * MIB), str(pins_file))],
                               access.pulls_of, log=lines.append)
    (plan,) = evictor.run_once(now=NOW)
    assert [v.digest for v in plan.victims] == [b]
    assert any(f"removing library/b@{b}" in line for line in lines), lines
    assert evictor.evicted_images["docker"] == 1 and evictor.evicted_bytes["docker"] >= MIB
    assert registry.holds_whole(scan_storage(str(registry.root)), "library/a", a)
    (again,) = evictor.run_once(now=NOW)  # under the cap now: nothing more
    assert not again.over_cap and not again.victims

    stats = Stats([Registry("docker", "http://127.0.0.1:1", str(registry.root), cap_bytes=int(1.5 * MIB))], access,
                  StorageSizes([]), counters=lambda url: {})
    stats.evicted_images, stats.evicted_bytes = evictor.evicted_images, evictor.evicted_bytes
    text = prometheus_text(stats.snapshot(top=0), stats.probe_answers)
    assert 'registry_stack_evicted_images_total{registry="docker"} 1' in text
    assert f'registry_stack_evicted_bytes_total{{registry="docker"}} {evictor.evicted_bytes["docker"]}' in text


def test_over_the_cap_with_only_pinned_images_left_is_said_once(registry: Registry2, tmp_path: Path) -> None:
    registry.image("library/p", "1", [2 * MIB], when=100)
    pins_file = tmp_path / "pins"
    pins_file.write_text(pins.pins_file(["library/p:1"]))
    lines: list[str] = []
    evictor = eviction.Evictor([eviction.CappedCache("docker", str(registry.root), MIB, str(pins_file))],
                               lambda name: {}, log=lines.append)
    evictor.run_once(now=NOW)
    evictor.run_once(now=NOW)
    assert len(lines) == 1 and "nothing left to remove: pinned images hold 2.0 MiB" in lines[0], lines
    assert scan_storage(str(registry.root)).manifests  # the pinned image stays
