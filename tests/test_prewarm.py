"""Pre-warmed, pinned images (`prewarm`): the key, the job, the pins, the TTL strip.

Settings: what the key accepts and refuses. Under mocks: the run-to-completion job the
program declares, the pins file and start script of a cache with pins, and what a failed
image becomes (a warning and `prewarmFailures`, not a failed update). For real: the job's
script against a local stand-in registry, and the TTL strip (pins.awk) with busybox awk.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components import pins, prewarm, verification
from components.config_schema import ConfigError
from components.prewarm_app import prewarm as job
from components.settings import settings_from_values
from tests.harness import Declaration, Mocks, declare

CONTAINER = "docker:index/container:Container"
USERS = ["ci:Ci-Pa55word-7f3a"]
HEX = "a" * 64
PREFIX = "registry-stack-dev-"


def settings(prewarm_entries: list[str], **values: Any) -> Any:
    return settings_from_values({"users": USERS, "prewarm": prewarm_entries, **values}, "dev")


def declared(values: dict[str, Any] | None = None, **extra: Any) -> Declaration:
    return declare({"users": USERS, **(values or {})}, secret_keys=("users",), **extra)


# ---------------------------------------------------------------------------------------
# The key
# ---------------------------------------------------------------------------------------


def test_entries_by_tag_and_digest_with_docker_hub_short_names_normalized() -> None:
    parsed = settings(
        ["docker=alpine:3.20", f"docker=library/busybox@sha256:{HEX};pin=false", "ghcr=org/tool:v1"],
        upstreams=["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io"],
    )
    assert [(i.upstream, i.reference, i.pin) for i in parsed.prewarm] == [
        ("docker", "library/alpine:3.20", True),
        ("docker", f"library/busybox@sha256:{HEX}", False),
        ("ghcr", "org/tool:v1", True),  # only Docker Hub has library/
    ]
    pinned = {u.name: pins.pinned_references(u) for u in parsed.upstreams}
    assert pinned == {"docker": ("library/alpine:3.20",), "ghcr": ("org/tool:v1",)}


def test_no_prewarm_pins_nothing() -> None:
    assert settings([]).prewarm == ()
    assert settings([]).upstream.pins == ()


@pytest.mark.parametrize(("entry", "message"), [
    ("quay=library/alpine:3.20", "names upstream 'quay', which registry-stack:upstreams does not list: use one of"),
    ("docker=library/alpine", "has no tag or digest: add one"),
    ("docker=library/alpine@sha256:abc", "has the digest 'sha256:abc': expected sha256: and 64 lowercase hex"),
    (f"docker=library/alpine@md5:{HEX}", "expected sha256: and 64 lowercase hex"),
    (f"docker=library/alpine:3.20@sha256:{HEX}", "gives both a tag and a digest: keep one"),
    ("docker=docker.io/library/alpine:3.20", "starts with the registry host 'docker.io': drop it"),
    ("docker=Library/Alpine:3.20", "has the repository 'Library/Alpine': expected lowercase"),
    ("docker=library/alpine:.bad", "has the tag '.bad'"),
    ("docker=library/alpine:3.20;pin=no", "has pin='no': expected pin=true or pin=false"),
    ("docker=library/alpine:3.20;ttl=1h", "has unknown option 'ttl': the only option is pin=false"),
    ("library/alpine:3.20", "is invalid: expected \"upstream=repository:tag\""),
])
def test_bad_entries_are_refused_naming_the_key_the_value_and_the_fix(entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        settings(["docker=library/ok:1", entry])
    assert str(error.value).startswith(f"registry-stack:prewarm[1]={entry!r} ")
    assert message in str(error.value)


def test_the_same_image_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"prewarm\[1\].*lists docker=library/alpine:3.20 again"):
        settings(["docker=alpine:3.20", "docker=library/alpine:3.20;pin=false"])


def test_prewarm_without_a_cache_or_in_swarm_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match="enableCache is false: there is no cache to pre-warm"):
        settings(["docker=alpine:3.20"], enableCache=False)
    with pytest.raises(ConfigError, match=r"orchestrator.*swarm is not supported yet"):
        settings(["docker=alpine:3.20"], orchestrator="swarm", swarmNodes=["node-1"])


def test_a_stack_file_entry_goes_through_the_engine_config() -> None:
    declaration = declared({"prewarm": ["docker=alpine:3.20"]})
    assert f"{PREFIX}prewarm" in declaration.containers


# ---------------------------------------------------------------------------------------
# What the program declares
# ---------------------------------------------------------------------------------------


def test_the_job_runs_to_completion_after_the_verification_with_each_cache_storage_read_only() -> None:
    declaration = declared({"prewarm": ["docker=alpine:3.20", "ghcr=org/tool:v1"],
                            "upstreams": ["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io"]})
    job_container = declaration.containers[f"{PREFIX}prewarm"]
    inputs = job_container.plain_inputs
    assert (inputs["attach"], inputs["logs"], inputs["mustRun"], inputs["restart"]) == (True, True, False, "no")
    agent_image = declaration.named("registry-agent-image").plain_inputs["name"]
    assert inputs["image"] == f"sha256:{hashlib.sha256(agent_image.encode()).hexdigest()}"
    assert inputs["command"] == ["python3", prewarm.SCRIPT_PATH, prewarm.CONFIG_PATH]
    uploads = {u["file"]: u["content"] for u in inputs["uploads"]}
    assert uploads[prewarm.SCRIPT_PATH] == (Path(job.__file__)).read_text()
    config = json.loads(uploads[prewarm.CONFIG_PATH])
    assert config["caches"] == {
        "docker": {"url": f"http://{PREFIX}cache:5000", "storage": "/caches/cache"},
        "ghcr": {"url": f"http://{PREFIX}ghcr-cache:5000", "storage": "/caches/ghcr-cache"},
    }
    assert [i["label"] for i in config["images"]] == ["docker=library/alpine:3.20", "ghcr=org/tool:v1"]
    mounts = {(v["volumeName"], v["containerPath"], v.get("readOnly")) for v in inputs["volumes"]}
    assert mounts == {(f"{PREFIX}cache-data", "/caches/cache", True),
                      (f"{PREFIX}ghcr-cache-data", "/caches/ghcr-cache", True)}
    waits_for = {urn.rpartition("::")[2] for urn in job_container.options["dependencies"]}
    assert "registry-verify" in waits_for  # after the stack was seen serving
    assert inputs["envs"] == [f"{prewarm.RUN_ENV}={verification.RUN_ID}"]  # a new id every up


def test_without_prewarm_there_is_no_job_and_the_cache_keeps_the_images_own_start() -> None:
    declaration = declared()
    assert f"{PREFIX}prewarm" not in declaration.containers
    cache = declaration.containers[f"{PREFIX}cache"].plain_inputs
    assert "entrypoints" not in cache and "command" not in cache
    assert [u["file"] for u in cache["uploads"]] == ["/etc/distribution/config.yml"]
    assert declaration.outputs["prewarmFailures"] == []


def test_a_cache_with_pins_gets_the_pins_file_and_starts_through_the_strip() -> None:
    declaration = declared({"prewarm": ["docker=alpine:3.20", f"docker=library/busybox@sha256:{HEX}",
                                        "docker=library/unpinned:1;pin=false"]})
    cache = declaration.containers[f"{PREFIX}cache"].plain_inputs
    uploads = {u["file"]: u["content"] for u in cache["uploads"]}
    assert pins.parse_pins_file(uploads[pins.PINS_PATH]) == ("library/alpine:3.20", f"library/busybox@sha256:{HEX}")
    assert uploads[prewarm.PINS_AWK_PATH] == prewarm.pins_awk()
    start = uploads[prewarm.CACHE_START_PATH]
    assert (cache["entrypoints"], cache["command"]) == (["/bin/sh"], [prewarm.CACHE_START_PATH])
    assert "CONFIG='/etc/distribution/config.yml'" in start
    assert "UPSTREAM='https://registry-1.docker.io/v2/'" in start
    assert "STATE='/var/lib/registry/scheduler-state.json'" in start
    assert not re.search(r"@[A-Z_]+@", start)  # every value filled in
    standby = declaration.containers[f"{PREFIX}cache-standby"].plain_inputs
    assert pins.PINS_PATH not in {u["file"] for u in standby["uploads"]}  # no proxy, no scheduler


def test_only_unpinned_entries_leave_the_cache_as_it_was() -> None:
    declaration = declared({"prewarm": ["docker=library/unpinned:1;pin=false"]})
    cache = declaration.containers[f"{PREFIX}cache"].plain_inputs
    assert "entrypoints" not in cache
    assert f"{PREFIX}prewarm" in declaration.containers


def test_a_2_8_cache_serves_its_own_config_path() -> None:
    declaration = declared({"prewarm": ["docker=alpine:3.20"], "registryImage": "registry:2.8.3"})
    start = {u["file"]: u["content"] for u in declaration.containers[f"{PREFIX}cache"].plain_inputs["uploads"]}
    assert "CONFIG='/etc/docker/registry/config.yml'" in start[prewarm.CACHE_START_PATH]


class JobMocks(Mocks):
    """pulumi-docker's answer for the pre-warm job: its exit status and output (the rest pass)."""

    def __init__(self, exit_code: int, logs: str) -> None:
        self.exit_code, self.logs = exit_code, logs

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        resource_id, outputs = super().new_resource(args)
        if args.inputs.get("name") == f"{PREFIX}prewarm" and not pulumi.runtime.is_dry_run():
            outputs.update(exitCode=self.exit_code, containerLogs=self.logs)
        return resource_id, outputs


def test_a_failed_image_is_a_warning_and_an_output_not_a_failed_update() -> None:
    logs = (
        "PREWARMED docker=library/alpine:3.20: sha256:1, 1 manifest(s), 2 blob(s), 10 bytes\n"
        "PREWARM-FAILED docker=library/missing:1: HTTP 404 MANIFEST_UNKNOWN: manifest unknown\n"
    )
    declaration = declared({"prewarm": ["docker=alpine:3.20", "docker=library/missing:1"]}, mocks=JobMocks(0, logs))
    assert declaration.outputs["prewarmFailures"] == [
        "docker=library/missing:1: HTTP 404 MANIFEST_UNKNOWN: manifest unknown"
    ]
    assert "warn: pre-warm: docker=library/missing:1: HTTP 404 MANIFEST_UNKNOWN: manifest unknown" in declaration.logs
    assert f"{PREFIX}front" in declaration.containers


def test_a_crashed_job_is_reported_too() -> None:
    assert prewarm.failures_of(1, "Traceback\nKeyError: 'images'\n") == [
        "the pre-warm run itself failed (exit status 1): Traceback | KeyError: 'images'"
    ]
    assert prewarm.failures_of(0, "PREWARMED x: ok\n") == []


# ---------------------------------------------------------------------------------------
# The job's script, for real, against a stand-in registry
# ---------------------------------------------------------------------------------------


def _blob(data: bytes) -> tuple[str, bytes]:
    return f"sha256:{hashlib.sha256(data).hexdigest()}", data


class StandinCache:
    """Serves manifests and blobs like a cache, and writes what it served into `storage`
    (as distribution does, blobs/sha256/<xx>/<hex>/data and the tag's link)."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.blobs: dict[str, bytes] = {}
        self.store = True

    def add_image(self, repository: str, tag: str, platforms: int = 0) -> str:
        def manifest() -> str:
            number = len(self.blobs)
            config, layer = _blob(json.dumps({"n": number}).encode()), _blob(f"layer{number}".encode())
            self.blobs.update([config, layer])
            body = json.dumps({"schemaVersion": 2, "mediaType": job.OCI_MANIFEST,
                               "config": {"digest": config[0]}, "layers": [{"digest": layer[0]}]}).encode()
            digest, _ = _blob(body)
            self.manifests[(repository, digest)] = (job.OCI_MANIFEST, body)
            return digest

        if not platforms:
            digest = manifest()
            self.manifests[(repository, tag)] = self.manifests[(repository, digest)]
            return digest
        children = [manifest() for _ in range(platforms)]
        body = json.dumps({"schemaVersion": 2, "mediaType": job.OCI_INDEX,
                           "manifests": [{"digest": child} for child in children]}).encode()
        digest, _ = _blob(body)
        self.manifests[(repository, digest)] = self.manifests[(repository, tag)] = (job.OCI_INDEX, body)
        return digest

    def write(self, digest: str, data: bytes) -> None:
        if self.store:
            path = Path(job.blob_path(str(self.storage), digest))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        cache = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def answer(self, status: int, body: bytes, media_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", media_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                parts = self.path.split("/")
                if self.path == "/v2/":
                    return self.answer(200, b"{}")
                repository, kind, reference = "/".join(parts[2:-2]), parts[-2], parts[-1]
                if kind == "manifests" and (repository, reference) in cache.manifests:
                    media_type, body = cache.manifests[(repository, reference)]
                    cache.write(_blob(body)[0], body)
                    if not reference.startswith("sha256:") and cache.store:
                        link = Path(job.tag_link_path(str(cache.storage), repository, reference))
                        link.parent.mkdir(parents=True, exist_ok=True)
                        link.write_text(_blob(body)[0])
                    return self.answer(200, body, media_type)
                if kind == "blobs" and reference in cache.blobs:
                    cache.write(reference, cache.blobs[reference])
                    return self.answer(200, cache.blobs[reference], "application/octet-stream")
                code = "MANIFEST_UNKNOWN" if kind == "manifests" else "BLOB_UNKNOWN"
                error = {"errors": [{"code": code, "message": f"{kind[:-1]} unknown"}]}
                return self.answer(404, json.dumps(error).encode())

        return Handler


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[tuple[StandinCache, str]]:
    cache = StandinCache(tmp_path / "storage")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), cache.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield cache, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _config(url: str, storage: Path, images: list[tuple[str, str]], store_seconds: float = 5) -> dict[str, Any]:
    return {
        "caches": {"docker": {"url": url, "storage": str(storage)}},
        "images": [{"label": f"docker={repo}:{ref}", "upstream": "docker", "repository": repo, "reference": ref}
                   for repo, ref in images],
        "readySeconds": 2, "requestSeconds": 5, "storeSeconds": store_seconds,
    }


def test_the_job_pulls_every_platform_and_blob_and_reports_each_image(standin: tuple[StandinCache, str]) -> None:
    cache, url = standin
    index = cache.add_image("library/multi", "1", platforms=2)
    single = cache.add_image("library/single", "1")
    lines = job.run(_config(url, cache.storage, [
        ("library/multi", "1"), ("library/single", single), ("library/missing", "1"),
    ]))
    assert lines[0] == f"PREWARMED docker=library/multi:1: {index}, 3 manifest(s), 4 blob(s), " + \
        f"{sum(len(b) for b in list(cache.blobs.values())[:4])} bytes"
    assert lines[1].startswith(f"PREWARMED docker=library/single:{single}: {single}, 1 manifest(s), 2 blob(s)")
    assert lines[2] == "PREWARM-FAILED docker=library/missing:1: HTTP 404 MANIFEST_UNKNOWN: manifest unknown"
    for digest in cache.blobs:  # everything is in the storage
        assert Path(job.blob_path(str(cache.storage), digest)).exists()


def test_an_image_the_cache_answered_but_did_not_store_fails_naming_the_file(standin: tuple[StandinCache, str]) -> None:
    cache, url = standin
    cache.add_image("library/alpine", "3.20")
    cache.store = False
    (line,) = job.run(_config(url, cache.storage, [("library/alpine", "3.20")], store_seconds=1))
    assert line.startswith("PREWARM-FAILED docker=library/alpine:3.20: pulled, but the cache had not stored 4 of 4")


def test_a_cache_that_does_not_answer_fails_its_images_not_the_run(tmp_path: Path) -> None:
    lines = job.run(_config("http://127.0.0.1:9", tmp_path, [("library/a", "1"), ("library/b", "1")]))
    assert len(lines) == 2
    assert all(line.startswith("PREWARM-FAILED") and "the cache does not serve" in line for line in lines)


def test_a_digest_that_does_not_match_the_bytes_fails(standin: tuple[StandinCache, str]) -> None:
    cache, url = standin
    digest = cache.add_image("library/alpine", "3.20")
    cache.manifests[("library/alpine", f"sha256:{HEX}")] = cache.manifests[("library/alpine", digest)]
    (line,) = job.run(_config(url, cache.storage, [("library/alpine", f"sha256:{HEX}")]))
    assert f"the manifest received for sha256:{HEX} has the digest {digest}" in line


# ---------------------------------------------------------------------------------------
# The TTL strip, for real, with busybox awk (what the official registry image runs)
# ---------------------------------------------------------------------------------------

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def _entry(key: str, entry_type: int) -> str:
    return f'"{key}":{{"Key":"{key}","ExpiryData":"2026-12-10T07:00:00.123456789Z","EntryType":{entry_type}}}'


def _stored_index(store: Path) -> dict[str, str]:
    """library/multi:1, an index of one platform manifest with a config and a layer, as 2.8 stores it."""
    v2 = store / "docker/registry/v2"
    config, layer = _blob(b"config"), _blob(b"layer")
    child_body = json.dumps({"config": {"digest": config[0]}, "layers": [{"digest": layer[0]}]}).encode()
    child = _blob(child_body)
    index_body = json.dumps({"manifests": [{"digest": child[0]}]}).encode()
    index = _blob(index_body)
    for digest, data in (config, layer, child, index):
        path = Path(job.blob_path(str(store), digest))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for digest in (child[0], index[0]):
        link = v2 / "repositories/library/multi/_manifests/revisions/sha256" / digest.split(":")[1] / "link"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.write_text(digest)
    tag = Path(job.tag_link_path(str(store), "library/multi", "1"))
    tag.parent.mkdir(parents=True, exist_ok=True)
    tag.write_text(index[0])
    return {"index": index[0], "child": child[0], "config": config[0], "layer": layer[0]}


def _awk(mode: str, store: Path, pins_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BUSYBOX, "awk", "-v", f"mode={mode}", "-v", f"pins={pins_file}", "-v", f"store={store}/docker/registry/v2",
         "-v", f"state={store}/scheduler-state.json", "-f", str(prewarm.APP_DIR / "pins.awk")],
        capture_output=True, text=True, check=False,
    )


def test_the_strip_drops_every_digest_of_a_pinned_tag_and_keeps_the_rest(tmp_path: Path) -> None:
    digests = _stored_index(tmp_path)
    other = f"sha256:{'b' * 64}"
    pinned_keys = [f"library/multi@{d}" for d in digests.values()]
    state = tmp_path / "scheduler-state.json"
    state.write_text("{" + ",".join(
        [_entry(key, 0) for key in pinned_keys] + [_entry(f"library/other@{other}", 1)]
    ) + "}")
    pins_file = tmp_path / "pins"
    pins_file.write_text(pins.pins_file(["library/multi:1"]))

    assert _awk("check", tmp_path, pins_file).returncode == 0
    stripped = _awk("strip", tmp_path, pins_file)
    assert stripped.returncode == 0, stripped.stderr
    kept = json.loads((tmp_path / "scheduler-state.json.tmp").read_text())
    assert list(kept) == [f"library/other@{other}"]
    assert kept[f"library/other@{other}"]["EntryType"] == 1
    assert sorted(stripped.stdout.split()) == sorted(["pinned,", "never", "expires:"] * 4 + pinned_keys)

    state.write_text(json.dumps(kept, separators=(",", ":")))
    assert _awk("check", tmp_path, pins_file).returncode == 1  # nothing pinned left: no restart


def test_the_strip_pins_a_digest_reference_and_leaves_an_empty_or_missing_state_alone(tmp_path: Path) -> None:
    digests = _stored_index(tmp_path)
    pins_file = tmp_path / "pins"
    pins_file.write_text(pins.pins_file([f"library/multi@{digests['child']}"]))
    state = tmp_path / "scheduler-state.json"
    state.write_text("{" + _entry(f"library/multi@{digests['child']}", 1) + "," +
                     _entry(f"library/multi@{digests['index']}", 1) + "}")
    assert _awk("strip", tmp_path, pins_file).returncode == 0
    kept = json.loads((tmp_path / "scheduler-state.json.tmp").read_text())
    assert list(kept) == [f"library/multi@{digests['index']}"]
    (tmp_path / "scheduler-state.json.tmp").unlink()
    state.write_text("{}")
    assert _awk("strip", tmp_path, pins_file).returncode == 0
    assert not (tmp_path / "scheduler-state.json.tmp").exists()
    state.unlink()
    assert _awk("check", tmp_path, pins_file).returncode == 1


# ---------------------------------------------------------------------------------------
# The start script, for real, with busybox sh and a stand-in registry binary
# ---------------------------------------------------------------------------------------

FAKE_REGISTRY = """#!/bin/sh
echo "started $*" >> {log}
trap 'echo stopped >> {log}; exit 0' TERM
while :; do sleep 1 & wait $!; done
"""


@pytest.fixture
def answering_upstream() -> Iterator[str]:
    """Any HTTP answer means reachable, as Docker Hub's 401 on /v2/ does."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _wait(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_start_script_strips_before_start_and_restarts_the_registry_when_a_pin_is_scheduled_again(
    tmp_path: Path, answering_upstream: str,
) -> None:
    digests = _stored_index(tmp_path)
    pinned = f"library/multi@{digests['layer']}"
    other = f"library/other@sha256:{'c' * 64}"
    state = tmp_path / "scheduler-state.json"
    state.write_text("{" + _entry(pinned, 0) + "," + _entry(other, 0) + "}")
    (tmp_path / "pins").write_text(pins.pins_file(["library/multi:1"]))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for applet in ("sh", "awk", "mv", "wget", "cat", "sleep", "kill"):
        (bin_dir / applet).symlink_to(BUSYBOX)
    log = tmp_path / "registry.log"
    (bin_dir / "registry").write_text(FAKE_REGISTRY.format(log=log))
    (bin_dir / "registry").chmod(0o755)
    upstream = replace(settings(["docker=alpine:3.20"]).upstream, url=answering_upstream)
    script = prewarm.cache_start_script(upstream, 3, check_seconds=1, tick_seconds=1)
    script = (script.replace(prewarm.SCHEDULER_STATE, str(state))
              .replace(f"'{pins.PINS_PATH}'", f"'{tmp_path / 'pins'}'")
              .replace("'/var/lib/registry/docker/registry/v2'", f"'{tmp_path}/docker/registry/v2'")
              .replace(prewarm.PINS_AWK_PATH, str(prewarm.APP_DIR / "pins.awk")))
    (tmp_path / "start.sh").write_text(script)
    process = subprocess.Popen([BUSYBOX, "sh", str(tmp_path / "start.sh")], cwd=tmp_path,
                               env={"PATH": str(bin_dir)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: log.exists() and "started" in log.read_text(), 5, "the registry to start")
        assert log.read_text() == "started serve /etc/distribution/config.yml\n"
        assert list(json.loads(state.read_text())) == [other]  # stripped before the registry read it
        # The proxy fetched the pinned layer again and saved its state: the script restarts it.
        state.write_text("{" + _entry(pinned, 0) + "," + _entry(other, 0) + "}")
        _wait(lambda: log.read_text().count("started") == 2, 10, "the registry to be restarted")
        assert log.read_text().splitlines()[1] == "stopped"
        assert list(json.loads(state.read_text())) == [other]
        time.sleep(2.5)  # nothing pinned is scheduled now: no more restarts
        assert log.read_text().count("started") == 2
        process.terminate()  # docker stop: the registry is stopped with the script
        assert process.wait(timeout=10) == 0
        assert log.read_text().endswith("stopped\n")
    finally:
        process.kill()
        output = process.stdout.read().decode() if process.stdout else ""
    assert "restarting the registry to drop them from its TTL scheduler" in output


def test_the_start_script_exits_with_the_registry_so_the_restart_policy_applies(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for applet in ("sh", "sleep", "kill"):
        (bin_dir / applet).symlink_to(BUSYBOX)
    (bin_dir / "registry").write_text("#!/bin/sh\nexit 3\n")  # 2.8 and 3.x exit when the upstream is unreachable
    (bin_dir / "registry").chmod(0o755)
    upstream = settings(["docker=alpine:3.20"]).upstream
    (tmp_path / "start.sh").write_text(prewarm.cache_start_script(upstream, 3, tick_seconds=1))
    finished = subprocess.run([BUSYBOX, "sh", str(tmp_path / "start.sh")], env={"PATH": str(bin_dir)},
                              capture_output=True, timeout=10, check=False)
    assert finished.returncode == 3
