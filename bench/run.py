#!/usr/bin/env python3
"""What the cache and the front cost and save, measured side by side in one run.

    sudo python3 bench/run.py [--link-mbit 80] [--big-mib 500] [--herd 10 50] [--aggregate 16]
                              [--reps 3] [--legs pulls,big,herd,auth,aggregate] [--json FILE]

Realizes the dev stack exactly as the program declares it (testbed/stack.py
`realized_stack`, the same path as the e2e suite) on the local Docker engine, with a
stand-in Docker Hub behind a throttled link:

    bench ──TLS──▶ front ──▶ cache ──▶ link (throttle_proxy.py, shared N Mbit/s) ──▶ origin registry
    bench ──────────────────────────▶ link                  (direct from the slow upstream)
    bench ─────────────────────────────────────────────────────────────────────▶ origin (seeding, unthrottled)

and prints, from this one run:
  (a) warm-cache pull vs the same pull direct from the throttled upstream;
  (b) cold pull through the cache vs direct from the throttled upstream;
  (c) push and pull of a large layer through the TLS front vs direct to the build
      registry's container address, with the CPU time of front and registry;
  (c) also against baselines of what TLS allows here: the same file from Caddy file_server
      (pull) and the registry itself on TLS (push), with the same client;
  (d) N concurrent cold pulls of one image (N = 10 and 50 by default): how often the cache
      fetched each blob from the upstream (the origin registry's access log), the herd's wall
      time against one cold pull alone, and when the waiting clients got their first byte;
  (e) what one authenticated request costs at the front (dockerd opens a new connection
      for every registry request), and a `docker push` + `docker pull` through it.
  (f) 16 concurrent warm pulls of a 100 MiB image through the front: total MB/s, p50/p95 and
      CPU per GB of the front, the cache and its herd tier (to size a host).

`--legs pulls,big,herd,auth,aggregate` picks legs; `--herd 10 50` the herd sizes.

Pulls are HTTP pulls (testbed/registry_http.py: manifest, then every blob, digests
checked); see its docstring for why not `docker pull`. Needs root (like the e2e suite:
/etc/hosts, /etc/docker/certs.d, nsenter) and a Docker engine. Not part of the test run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import functools
import hashlib
import http.client
import io
import json
import os
import platform
import re
import secrets
import ssl
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from components import renderers  # noqa: E402
from testbed import images  # noqa: E402
from testbed.clients import DockerCli, free_port, make_unique_image, remove_local_image, wait_for_http  # noqa: E402
from testbed.registry_http import (  # noqa: E402
    MANIFEST_V2,
    Endpoint,
    SyntheticImage,
    percentile,
    pull_image,
    push_image,
    synthetic_image,
)
from testbed.stack import RealizedStack, e2e_values, realized_stack  # noqa: E402
from testbed.upstreams import StandinUpstream, create_with_files  # noqa: E402

MIB = 2**20
LINK_ALIAS = "throttled-upstream"
THROTTLE_PROXY = Path(__file__).with_name("throttle_proxy.py")
PULL_LAYER_MIB = (4, 8, 16, 32)  # (a) and (b): 60 MiB in 4 layers
HERD_LAYER_MIB = (2, 4, 8)  # (d): 14 MiB in 3 layers
UPLOAD_CHUNK = MIB


# -- the stack with its throttled upstream ----------------------------------------------------


@dataclass
class Link:
    """The throttled path to the origin: a `sleep` container whose netns runs the proxy."""

    container: Any
    port: int  # published on 127.0.0.1
    process: subprocess.Popen


@dataclass
class Bench:
    client: docker.DockerClient
    stack: RealizedStack
    origin: StandinUpstream
    link: Link

    @property
    def cache(self) -> Endpoint:
        return Endpoint(f"https://{self.stack.address('cache')}", ca_file=str(self.stack.ca_file))

    @property
    def throttled(self) -> Endpoint:
        return Endpoint(f"http://127.0.0.1:{self.link.port}")

    @property
    def origin_endpoint(self) -> Endpoint:
        return Endpoint(f"http://{self.origin.local_address}")

    @property
    def auth_header(self) -> str:
        return "Basic " + base64.b64encode(f"admin:{self.stack.password}".encode()).decode()


def _address_on(container: Any, network: str) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def start_link(client: docker.DockerClient, stack: str, network: str, bytes_per_second: float) -> Link:
    origin = client.containers.get(f"registry-stack-{stack}-upstream")
    port = free_port()
    container = client.containers.create(
        images.REGISTRY.tag, entrypoint=["sleep", "7200"], name=f"registry-stack-{stack}-link",
        network=network, networking_config={network: {"Aliases": [LINK_ALIAS]}},
        ports={"5000/tcp": ("127.0.0.1", port)}, labels={"registry-stack.bench": "link"}, detach=True,
    )
    container.start()
    container.reload()
    # The proxy runs in the container's network namespace only: it dials the origin by
    # address (the host's resolver does not know the network's aliases).
    process = subprocess.Popen([
        "nsenter", f"--net=/proc/{container.attrs['State']['Pid']}/ns/net", sys.executable, str(THROTTLE_PROXY),
        "--listen-port", "5000", "--target", f"{_address_on(origin, network)}:5000", "--rate", str(bytes_per_second),
    ])
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v2/")
    except AssertionError:
        process.terminate()
        raise
    return Link(container, port, process)


@contextlib.contextmanager
def bench_stack(client: docker.DockerClient, stack: str, bytes_per_second: float) -> Iterator[Bench]:
    links: list[Link] = []

    def link_starter(network: str) -> None:
        links.append(start_link(client, stack, network, bytes_per_second))

    overrides = {"upstreams": [f"docker=http://{LINK_ALIAS}:5000"]}
    try:
        with realized_stack(client, stack=stack, overrides=overrides, network_starters=[link_starter]) as (
            realized, origin,
        ):
            assert origin is not None
            yield Bench(client, realized, origin, links[0])
    finally:
        for link in links:
            link.process.terminate()
            link.process.wait(timeout=10)


# -- baselines: what TLS itself allows on this machine ------------------------------------------

BLOBS_DIR = f"{renderers.REGISTRY_DATA_DIR}/docker/registry/v2/blobs"


@dataclass
class Baseline:
    """A server on 127.0.0.1:port that presents the front's own certificate (same key, same TLS)."""

    container: Any
    port: int


def _front_tls_files(bench: Bench) -> dict[str, bytes]:
    front = bench.stack.container("front")
    files = {}
    for path in (renderers.FRONT_CERT_PATH, renderers.FRONT_KEY_PATH):
        stream, _ = front.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            member = archive.getmembers()[0]
            extracted = archive.extractfile(member)
            assert extracted is not None
            files[path] = extracted.read()
    return files


def _start_with_files(bench: Bench, name: str, image: str, files: dict[str, bytes], **kwargs: Any) -> Baseline:
    port = free_port()
    container = create_with_files(
        bench.client, image, files, name=f"registry-stack-{bench.stack.stack}-{name}",
        ports={"443/tcp": ("127.0.0.1", port)}, labels={"registry-stack.bench": name}, **kwargs,
    )
    return Baseline(container, port)


def start_file_server(bench: Bench) -> Baseline:
    """Caddy `file_server` over TLS on the build registry's blobs, read-only: the pull baseline.

    The same Caddy binary and certificate as the front, the same file on the same disk; the
    URL is the blob's path in the registry's storage (`/sha256/<2>/<hex>/data`)."""
    config = {
        "admin": {"disabled": True},
        "apps": {
            "http": {"servers": {"baseline": {
                "listen": [":443"], "automatic_https": {"disable": True}, "tls_connection_policies": [{}],
                "routes": [{"handle": [{"handler": "file_server", "root": BLOBS_DIR}]}],
            }}},
            "tls": {"certificates": {"load_files": [
                {"certificate": renderers.FRONT_CERT_PATH, "key": renderers.FRONT_KEY_PATH}
            ]}},
        },
    }
    files = {**_front_tls_files(bench), renderers.FRONT_CONFIG_PATH: json.dumps(config).encode()}
    build_volume = f"registry-stack-{bench.stack.stack}-build-data"
    baseline = _start_with_files(
        bench, "baseline-files", images.CADDY.tag, files,
        volumes={build_volume: {"bind": renderers.REGISTRY_DATA_DIR, "mode": "ro"}},
        command=["caddy", "run", "--config", renderers.FRONT_CONFIG_PATH],
    )
    wait_for_tls(bench, baseline.port)
    return baseline


def start_tls_registry(bench: Bench) -> Baseline:
    """The registry itself on TLS (distribution's `http.tls`), no front: the push baseline.

    A static file server takes no uploads; what TLS allows for a push is the registry's own
    work plus TLS in one process, which is this. Its own volume, removed with the bench."""
    config = json.loads(renderers.registry_config("build", 2))
    config["http"]["addr"] = ":443"
    config["http"]["tls"] = {"certificate": renderers.FRONT_CERT_PATH, "key": renderers.FRONT_KEY_PATH}
    files = {**_front_tls_files(bench), "/etc/docker/registry/config.yml": json.dumps(config).encode()}
    baseline = _start_with_files(bench, "baseline-registry", images.REGISTRY.tag, files)
    wait_for_tls(bench, baseline.port)
    return baseline


def wait_for_tls(bench: Bench, port: int, timeout: float = 30) -> None:
    host = bench.stack.address("build").rsplit(":", 1)[0]
    context = ssl.create_default_context(cafile=str(bench.stack.ca_file))
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = http.client.HTTPSConnection(host, port, context=context, timeout=5)
            connection.request("GET", "/")
            connection.getresponse().read()
            connection.close()
            return
        except (OSError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


# -- measuring ---------------------------------------------------------------------------------


def container_cpu_seconds(container: Any) -> float | None:
    """CPU time the container used so far (cgroup v1 or v2), or None when unreadable."""
    cid = container.id
    for path in (f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage",
                 f"/sys/fs/cgroup/cpu,cpuacct/docker/{cid}/cpuacct.usage"):
        with contextlib.suppress(OSError):
            return int(Path(path).read_text()) / 1e9
    with contextlib.suppress(OSError, StopIteration, ValueError):
        stat = Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat").read_text()
        return int(next(line.split()[1] for line in stat.splitlines() if line.startswith("usage_usec"))) / 1e6
    return None


@dataclass
class Timed:
    seconds: float
    cpu: dict[str, float | None]


def timed(
    bench: Bench, action: Callable[[], object], roles: tuple[str, ...] = ("front", "build"),
    extra: dict[str, Any] | None = None,
) -> Timed:
    """Wall time of `action` and the CPU time each container spent meanwhile (`extra`: more
    containers by name, such as a baseline server)."""
    containers = {role: bench.stack.container(role) for role in roles}
    containers.update(extra or {})
    before = {role: container_cpu_seconds(c) for role, c in containers.items()}
    started = time.monotonic()
    action()
    seconds = time.monotonic() - started
    cpu: dict[str, float | None] = {}
    for role, container in containers.items():
        after = container_cpu_seconds(container)
        start = before[role]
        cpu[role] = None if after is None or start is None else round(after - start, 3)
    return Timed(seconds, cpu)


def origin_blob_fetches(bench: Bench, repository: str) -> Counter[str]:
    """GETs of each blob of `repository` in the origin's access log (each request logs one line)."""
    pattern = re.compile(rf'"GET /v2/{re.escape(repository)}/blobs/(sha256:[0-9a-f]{{64}}) ')
    log = bench.client.containers.get(bench.origin.name).logs().decode(errors="replace")
    return Counter(match.group(1) for match in pattern.finditer(log))


def wait_until_cached(bench: Bench, repository: str, image: SyntheticImage, timeout: float = 120) -> None:
    """The cache stores a blob in the background while it serves it: wait for every link file."""
    cache = bench.stack.container("cache")
    layers = f"/var/lib/registry/docker/registry/v2/repositories/{repository}/_layers/sha256"
    deadline = time.monotonic() + timeout
    for blob in image.blobs:
        path = f"{layers}/{blob.digest.split(':')[1]}/link"
        while True:
            try:
                cache.get_archive(path)
                break
            except docker.errors.NotFound:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the cache did not store {blob.digest} in {timeout}s") from None
                time.sleep(0.5)


def seed(bench: Bench, repository: str, layer_mib: tuple[int, ...]) -> SyntheticImage:
    image = synthetic_image([size * MIB for size in layer_mib])
    push_image(bench.origin_endpoint, repository, "1", image)
    return image


# -- (a) and (b): warm and cold pulls vs the slow upstream --------------------------------------


def measure_pulls_vs_upstream(bench: Bench, reps: int) -> dict[str, Any]:
    rounds = []
    for rep in range(reps):
        repository = f"library/bench-pull-{rep}-{secrets.token_hex(3)}"
        image = seed(bench, repository, PULL_LAYER_MIB)
        direct = pull_image(bench.throttled, repository, "1").seconds
        before_cold = origin_blob_fetches(bench, repository)  # the direct pull's, one per blob
        cold = pull_image(bench.cache, repository, "1").seconds
        wait_until_cached(bench, repository, image)
        after_cold = origin_blob_fetches(bench, repository)
        warm = statistics.median(pull_image(bench.cache, repository, "1").seconds for _ in range(3))
        assert origin_blob_fetches(bench, repository) == after_cold, "a warm pull reached the upstream"
        rounds.append({
            "direct_s": round(direct, 3), "cold_s": round(cold, 3), "warm_s": round(warm, 3),
            "upstream_fetches_per_blob_cold": sorted((after_cold - before_cold).values()),
        })
    direct = statistics.median(r["direct_s"] for r in rounds)
    cold = statistics.median(r["cold_s"] for r in rounds)
    warm = statistics.median(r["warm_s"] for r in rounds)
    return {
        "image_mib": sum(PULL_LAYER_MIB), "layers": len(PULL_LAYER_MIB), "rounds": rounds,
        "direct_s": direct, "cold_s": cold, "warm_s": warm,
        "a_warm_speedup_vs_direct": round(direct / warm, 1),
        "b_cold_over_direct": round(cold / direct, 2),
    }


# -- (c): a large layer through the front vs direct to the build registry -----------------------


@dataclass(frozen=True)
class BigBlob:
    """`size` bytes made of one random MiB repeated: cheap to send, digest computed once."""

    block: bytes
    size: int
    digest: str

    @classmethod
    def make(cls, mib: int) -> BigBlob:
        block = secrets.token_bytes(UPLOAD_CHUNK)
        digest = hashlib.sha256()
        for _ in range(mib):
            digest.update(block)
        return cls(block, mib * MIB, f"sha256:{digest.hexdigest()}")

    def chunks(self) -> Iterator[bytes]:
        for _ in range(self.size // len(self.block)):
            yield self.block


def _build_connection(
    bench: Bench, via_front: bool, tls_port: int = 0
) -> tuple[http.client.HTTPConnection, dict[str, str]]:
    """To the build registry through the front, or direct to its container; with `tls_port`,
    to a baseline on that port (same host name, certificate and client as the front)."""
    if via_front or tls_port:
        host = bench.stack.address("build").rsplit(":", 1)[0]
        context = ssl.create_default_context(cafile=str(bench.stack.ca_file))
        connection = http.client.HTTPSConnection(host, tls_port or bench.stack.https_port, context=context, timeout=900)
        return connection, {} if tls_port else {"Authorization": bench.auth_header}
    build = bench.stack.container("build")
    build.reload()
    # The container's own address: a container this run started, reached over its network.
    address = next(iter(build.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    return http.client.HTTPConnection(address, 5000, timeout=900), {}


def _expect(connection: http.client.HTTPConnection, status: int) -> http.client.HTTPResponse:
    answer = connection.getresponse()
    answer.read()
    if answer.status != status:
        raise AssertionError(f"expected HTTP {status}, got {answer.status}")
    return answer


def push_big(bench: Bench, blob: BigBlob, repository: str, via_front: bool, tls_port: int = 0) -> None:
    """POST, one streamed PATCH of the whole layer, PUT: what `docker push` does for a layer."""
    connection, headers = _build_connection(bench, via_front, tls_port)
    try:
        connection.request("POST", f"/v2/{repository}/blobs/uploads/", headers=headers)
        location = _expect(connection, 202).getheader("Location", "")
        connection.request("PATCH", location, body=blob.chunks(), encode_chunked=True,
                           headers={**headers, "Content-Type": "application/octet-stream"})
        location = _expect(connection, 202).getheader("Location", "")
        separator = "&" if "?" in location else "?"
        connection.request("PUT", f"{location}{separator}digest={blob.digest}", body=b"", headers=headers)
        _expect(connection, 201)
    finally:
        connection.close()


def pull_big(bench: Bench, blob: BigBlob, repository: str, via_front: bool, tls_port: int = 0) -> None:
    connection, headers = _build_connection(bench, via_front, tls_port)
    hexdigest = blob.digest.split(":", 1)[1]
    # The file server serves the registry's own file of the blob (its storage layout).
    path = f"/sha256/{hexdigest[:2]}/{hexdigest}/data" if tls_port else f"/v2/{repository}/blobs/{blob.digest}"
    try:
        connection.request("GET", path, headers=headers)
        answer = connection.getresponse()
        if answer.status != 200:
            raise AssertionError(f"GET blob: HTTP {answer.status}")
        received = 0
        while chunk := answer.read(MIB):
            received += len(chunk)
        if received != blob.size:
            raise AssertionError(f"GET blob: {received} of {blob.size} bytes")
    finally:
        connection.close()


BIG_KINDS = ("front", "direct", "baseline")


def measure_big_layer(bench: Bench, mib: int, reps: int) -> dict[str, Any]:
    blob = BigBlob.make(mib)
    samples: dict[str, list[Timed]] = {f"{op}_{kind}": [] for op in ("push", "pull") for kind in BIG_KINDS}
    tls_registry = start_tls_registry(bench)
    files = start_file_server(bench)
    ports = {"front": 0, "direct": 0}
    try:
        for rep in range(reps):
            # Alternate front, direct and baseline so that a busy moment of the machine hits all alike.
            pushed = f"bench/big-{rep}-{secrets.token_hex(3)}"
            for kind in BIG_KINDS:
                port = tls_registry.port if kind == "baseline" else ports[kind]
                push = functools.partial(push_big, bench, blob, f"{pushed}-{kind}", kind == "front", port)
                samples[f"push_{kind}"].append(timed(bench, push, extra={"baseline": tls_registry.container}))
            for kind in BIG_KINDS:
                port = files.port if kind == "baseline" else ports[kind]
                pull = functools.partial(pull_big, bench, blob, f"{pushed}-front", kind == "front", port)
                samples[f"pull_{kind}"].append(timed(bench, pull, extra={"baseline": files.container}))
    finally:
        for server in (tls_registry, files):
            server.container.remove(force=True, v=True)
    summary: dict[str, Any] = {"layer_mib": mib}
    for key, runs in samples.items():
        summary[key] = {
            "mb_per_s": round(statistics.median(blob.size / run.seconds / 1e6 for run in runs), 1),
            "runs_mb_per_s": [round(blob.size / run.seconds / 1e6, 1) for run in runs],
            "cpu_s_per_gb": _cpu_per_gb(runs, blob.size),
        }
    for op in ("push", "pull"):
        front = summary[f"{op}_front"]["mb_per_s"]
        summary[f"{op}_front_over_direct"] = round(front / summary[f"{op}_direct"]["mb_per_s"], 2)
        summary[f"{op}_front_over_baseline"] = round(front / summary[f"{op}_baseline"]["mb_per_s"], 2)
    return summary


def _cpu_per_gb(runs: list[Timed], size: int) -> dict[str, float | None]:
    result: dict[str, float | None] = {}
    for role in runs[0].cpu:
        values = [run.cpu[role] for run in runs]
        known = [value for value in values if value is not None]
        result[role] = round(statistics.median(known) / (size / 1e9), 2) if len(known) == len(values) else None
    return result


# -- (d): a herd of cold pulls -------------------------------------------------------------------


@dataclass
class TimedPull:
    seconds: float
    first_byte_s: float  # from the start of the pull to the first byte of its largest blob's body
    started_at: float


def pull_with_first_byte(endpoint: Endpoint, repository: str) -> TimedPull:
    """Manifest, then every blob (digests checked), noting when the largest blob's first byte came.

    A waiting client of a coalescing tier that streams gets bytes while the fill proceeds; one
    that waits for the whole fill (nginx proxy_cache_lock) gets its first byte only at the end.
    The largest blob is found in the manifest: hashing the seeded image's layer to name it cost
    each of 50 clients another 8 MiB of SHA-256, the client's work, not the cache's."""
    started = time.monotonic()
    first_byte = 0.0
    connection = endpoint.connect(timeout=600)
    try:
        connection.request("GET", f"/v2/{repository}/manifests/1", headers=endpoint.headers({"Accept": MANIFEST_V2}))
        answer = connection.getresponse()
        manifest = json.loads(answer.read())
        if answer.status != 200:
            raise AssertionError(f"manifest: HTTP {answer.status}")
        digests = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
        largest = max(manifest["layers"], key=lambda layer: layer["size"])["digest"]
        for digest in digests:
            connection.request("GET", f"/v2/{repository}/blobs/{digest}", headers=endpoint.headers())
            answer = connection.getresponse()
            if answer.status != 200:
                raise AssertionError(f"blob {digest}: HTTP {answer.status} {answer.read()[:200]!r}")
            hasher = hashlib.sha256()
            while chunk := answer.read(MIB):
                if digest == largest and not first_byte:
                    first_byte = time.monotonic() - started
                hasher.update(chunk)
            if f"sha256:{hasher.hexdigest()}" != digest:
                raise AssertionError(f"blob {digest}: the bytes received have another digest")
    finally:
        connection.close()
    return TimedPull(time.monotonic() - started, first_byte, started)


def measure_herd(bench: Bench, clients: int) -> dict[str, Any]:
    """One cold pull alone, then `clients` cold pulls of another image (same layer sizes) at once."""
    alone_repository = f"library/bench-herd-alone-{secrets.token_hex(3)}"
    alone_image = seed(bench, alone_repository, HERD_LAYER_MIB)
    alone = pull_with_first_byte(bench.cache, alone_repository)
    wait_until_cached(bench, alone_repository, alone_image)
    alone_fetches = origin_blob_fetches(bench, alone_repository)

    repository = f"library/bench-herd-{secrets.token_hex(3)}"
    image = seed(bench, repository, HERD_LAYER_MIB)
    barrier = threading.Barrier(clients)

    def one_pull() -> TimedPull:
        barrier.wait(timeout=60)
        return pull_with_first_byte(bench.cache, repository)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        pulls = list(pool.map(lambda _: one_pull(), range(clients)))
    wall = time.monotonic() - started
    wait_until_cached(bench, repository, image)
    fetches = origin_blob_fetches(bench, repository)
    # The same herd again, now warm: what this machine's CPUs and this one Python client allow
    # for N pulls at once (TLS, digests), with no upstream in the way.
    barrier = threading.Barrier(clients)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(lambda _: one_pull(), range(clients)))
    warm_wall = time.monotonic() - started
    link_bytes = sum(fetches[blob.digest] * blob.size for blob in image.blobs)
    first_bytes = [pull.first_byte_s for pull in pulls]
    return {
        "clients": clients, "image_mib": sum(HERD_LAYER_MIB), "wall_s": round(wall, 2),
        "one_cold_pull_s": round(alone.seconds, 2),
        "wall_over_one_cold_pull": round(wall / alone.seconds, 2),
        "warm_herd_wall_s": round(warm_wall, 2),
        "slowest_pull_s": round(max(pull.seconds for pull in pulls), 2),
        "fetches_per_blob": {blob.digest[:19]: fetches[blob.digest] for blob in image.blobs},
        "fetches_per_blob_one_client": [alone_fetches[blob.digest] for blob in alone_image.blobs],
        "max_fetches_per_blob": max(fetches[blob.digest] for blob in image.blobs),
        "upstream_bytes_over_image_bytes": round(link_bytes / image.total_bytes, 2),
        "largest_layer_mib": max(HERD_LAYER_MIB),
        "first_byte_s_one_client": round(alone.first_byte_s, 2),
        "first_byte_s_p50": round(statistics.median(first_bytes), 2),
        "first_byte_s_p95": round(percentile(first_bytes, 0.95), 2),
        "first_byte_s_max": round(max(first_bytes), 2),
    }


# -- (f): aggregate throughput of warm pulls through the front ----------------------------------------


AGGREGATE_LAYER_MIB = (1, 9, 20, 30, 40)  # 100 MiB in 5 layers


def measure_aggregate(bench: Bench, clients: int) -> dict[str, Any]:
    """`clients` warm pulls at once of a 100 MiB image from the cache, through the front."""
    repository = f"library/bench-aggregate-{secrets.token_hex(3)}"
    image = seed(bench, repository, AGGREGATE_LAYER_MIB)
    pull_image(bench.cache, repository, "1")  # cold: fills the cache
    wait_until_cached(bench, repository, image)
    barrier = threading.Barrier(clients)

    def one_pull() -> float:
        barrier.wait(timeout=60)
        return pull_image(bench.cache, repository, "1").seconds

    roles = tuple(role for role in ("front", "cache", "cache-herd") if _has_container(bench, role))
    latencies: list[float] = []

    def run() -> None:
        with ThreadPoolExecutor(max_workers=clients) as pool:
            latencies.extend(pool.map(lambda _: one_pull(), range(clients)))

    result = timed(bench, run, roles=roles)
    total = clients * image.total_bytes
    return {
        "clients": clients, "image_mib": round(image.total_bytes / MIB), "wall_s": round(result.seconds, 2),
        "total_mb_per_s": round(total / result.seconds / 1e6, 1),
        "pull_s_p50": round(statistics.median(latencies), 2), "pull_s_p95": round(percentile(latencies, 0.95), 2),
        "cpu_s_per_gb": {
            role: None if cpu is None else round(cpu / (total / 1e9), 2) for role, cpu in result.cpu.items()
        },
    }


def _has_container(bench: Bench, role: str) -> bool:
    try:
        bench.stack.container(role)
    except docker.errors.NotFound:
        return False
    return True


# -- (e): authenticated requests at the front ------------------------------------------------------


def _fresh_connection_request(bench: Bench, role: str, authenticated: bool) -> float:
    """One GET /v2/ on a new TLS connection, as dockerd makes every registry request."""
    host = bench.stack.address(role).rsplit(":", 1)[0]
    context = ssl.create_default_context(cafile=str(bench.stack.ca_file))
    started = time.monotonic()
    connection = http.client.HTTPSConnection(host, bench.stack.https_port, context=context, timeout=30)
    try:
        connection.request("GET", "/v2/", headers={"Authorization": bench.auth_header} if authenticated else {})
        _expect(connection, 200)
    finally:
        connection.close()
    return time.monotonic() - started


def measure_auth(bench: Bench, requests: int = 10) -> dict[str, Any]:
    authenticated = [_fresh_connection_request(bench, "build", True) for _ in range(requests)]
    anonymous = [_fresh_connection_request(bench, "cache", False) for _ in range(requests)]
    cli = DockerCli()
    tag = f"{bench.stack.address('build')}/bench/cli-{secrets.token_hex(3)}:1"
    try:
        cli.login(bench.stack.address("build"), "admin", bench.stack.password)
        make_unique_image(tag, layers=4, layer_bytes=256 * 1024)
        push = timed(bench, lambda: cli.run("push", tag))
        remove_local_image(tag)
        pull = timed(bench, lambda: cli.run("pull", tag))
    finally:
        remove_local_image(tag)
        cli.cleanup()
    return {
        "authenticated_request_ms_median": round(statistics.median(authenticated) * 1000, 1),
        "authenticated_request_ms_all": [round(s * 1000, 1) for s in authenticated],
        "anonymous_request_ms_median": round(statistics.median(anonymous) * 1000, 1),
        "docker_push_s": round(push.seconds, 2), "docker_push_front_cpu_s": push.cpu["front"],
        "docker_pull_s": round(pull.seconds, 2), "docker_pull_front_cpu_s": pull.cpu["front"],
    }


# -- report -----------------------------------------------------------------------------------------


def _report_pulls(pulls: dict[str, Any]) -> list[str]:
    return [
        f"(a) warm-cache pull vs direct from the throttled upstream, {pulls['image_mib']} MiB in "
        f"{pulls['layers']} layers:",
        f"    direct {pulls['direct_s']:.2f}s, warm cache {pulls['warm_s']:.2f}s -> "
        f"{pulls['a_warm_speedup_vs_direct']}x faster from the cache",
        "(b) cold pull through the cache vs direct:",
        f"    cold {pulls['cold_s']:.2f}s, direct {pulls['direct_s']:.2f}s -> cold/direct = "
        f"{pulls['b_cold_over_direct']}; upstream fetches per blob in a cold pull: "
        f"{[r['upstream_fetches_per_blob_cold'] for r in pulls['rounds']]}",
    ]


def _report_big(big: dict[str, Any]) -> list[str]:
    lines = [
        f"(c) {big['layer_mib']} MiB layer, front (TLS + auth) vs direct to the build registry container, and vs a "
        "baseline of what TLS allows here (pull: Caddy file_server on the same file; push: the registry on TLS):",
    ]
    for op in ("push", "pull"):
        front, direct, baseline = big[f"{op}_front"], big[f"{op}_direct"], big[f"{op}_baseline"]
        lines.append(
            f"    {op}: front {front['mb_per_s']} MB/s, direct {direct['mb_per_s']} MB/s, baseline "
            f"{baseline['mb_per_s']} MB/s -> front/direct = {big[f'{op}_front_over_direct']}, front/baseline = "
            f"{big[f'{op}_front_over_baseline']}; CPU s/GB front {front['cpu_s_per_gb']['front']}, registry "
            f"{front['cpu_s_per_gb']['build']} (baseline server {baseline['cpu_s_per_gb']['baseline']})"
        )
    return lines


def _report_herd(herd: dict[str, Any]) -> list[str]:
    return [
        f"(d) {herd['clients']} concurrent cold pulls of one {herd['image_mib']} MiB image: upstream fetches per "
        f"blob {list(herd['fetches_per_blob'].values())} (one client alone: {herd['fetches_per_blob_one_client']}); "
        f"upstream bytes = {herd['upstream_bytes_over_image_bytes']}x the image",
        f"    herd wall {herd['wall_s']}s, one cold pull alone {herd['one_cold_pull_s']}s -> herd/one = "
        f"{herd['wall_over_one_cold_pull']} (the same herd warm: {herd['warm_herd_wall_s']}s); first byte of the "
        f"{herd['largest_layer_mib']} MiB layer after "
        f"p50 {herd['first_byte_s_p50']}s, p95 {herd['first_byte_s_p95']}s, max {herd['first_byte_s_max']}s "
        f"(one client alone: {herd['first_byte_s_one_client']}s)",
    ]


def _report_aggregate(agg: dict[str, Any]) -> list[str]:
    return [
        f"(f) {agg['clients']} concurrent warm pulls of a {agg['image_mib']} MiB image through the front: "
        f"{agg['total_mb_per_s']} MB/s in total, pull p50 {agg['pull_s_p50']}s, p95 {agg['pull_s_p95']}s; "
        f"CPU s/GB {agg['cpu_s_per_gb']}",
    ]


def _report_auth(auth: dict[str, Any]) -> list[str]:
    return [
        "(e) one authenticated request on a new connection (as dockerd makes each request): median "
        f"{auth['authenticated_request_ms_median']} ms, anonymous {auth['anonymous_request_ms_median']} ms; "
        f"docker push {auth['docker_push_s']}s (front CPU {auth['docker_push_front_cpu_s']}s), "
        f"docker pull {auth['docker_pull_s']}s (front CPU {auth['docker_pull_front_cpu_s']}s)",
    ]


def report(results: dict[str, Any]) -> str:
    setup = results["setup"]
    lines = [
        f"registry-stack bench, {setup['date']} on {setup['host']} ({setup['cpus']} CPUs, load before "
        f"{setup['load_before']}); upstream link {setup['link_mbit']} Mbit/s shared; registry "
        f"{setup['registry_image']}, front {setup['front_image']}",
        "",
    ]
    if "pulls" in results:
        lines += _report_pulls(results["pulls"])
    if "big_layer" in results:
        lines += _report_big(results["big_layer"])
    for herd in results.get("herds", []):
        lines += _report_herd(herd)
    if "auth" in results:
        lines += _report_auth(results["auth"])
    if "aggregate" in results:
        lines += _report_aggregate(results["aggregate"])
    return "\n".join(lines)


LEGS = ("pulls", "big", "herd", "auth", "aggregate")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--link-mbit", type=float, default=80, help="bandwidth of the throttled upstream link")
    parser.add_argument("--big-mib", type=int, default=500, help="size of the layer of (c)")
    parser.add_argument("--herd", type=int, nargs="+", default=[10, 50],
                        help="concurrent cold pulls in (d), one run per number")
    parser.add_argument("--aggregate", type=int, default=16, help="concurrent warm pulls in (f)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of (a)-(c); medians are reported")
    parser.add_argument("--legs", default=",".join(LEGS), help=f"comma-separated subset of {','.join(LEGS)}")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--stack", default=f"bench-{os.environ.get('E2E_STACK', 'local')}", help="stack name")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    legs = set(args.legs.split(","))
    if legs - set(LEGS):
        sys.exit(f"unknown legs {sorted(legs - set(LEGS))}: choose from {','.join(LEGS)}")
    if os.geteuid() != 0:
        sys.exit("bench/run.py needs root (like the e2e suite): sudo python3 bench/run.py")
    client = docker.from_env(timeout=600)
    images.build_all()
    started = time.monotonic()
    tags = e2e_values("Pulumi.dev.yaml", {})
    results: dict[str, Any] = {"setup": {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "host": platform.node(),
        "cpus": os.cpu_count(), "load_before": round(os.getloadavg()[0], 2), "link_mbit": args.link_mbit,
        "registry_image": tags["registryImage"], "front_image": tags["frontImage"],
    }}
    with bench_stack(client, args.stack, args.link_mbit * 1e6 / 8) as bench:
        print("stack realized; measuring", file=sys.stderr, flush=True)
        if "pulls" in legs:
            results["pulls"] = measure_pulls_vs_upstream(bench, args.reps)
        if "big" in legs:
            results["big_layer"] = measure_big_layer(bench, args.big_mib, args.reps)
        if "herd" in legs:
            results["herds"] = [measure_herd(bench, clients) for clients in args.herd]
        if "auth" in legs:
            results["auth"] = measure_auth(bench)
        if "aggregate" in legs:
            results["aggregate"] = measure_aggregate(bench, args.aggregate)
    results["setup"]["total_s"] = round(time.monotonic() - started, 1)
    print(report(results))
    print(f"(whole run {results['setup']['total_s']}s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
