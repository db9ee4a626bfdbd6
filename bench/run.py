#!/usr/bin/env python3
"""What the cache and the front cost and save, measured side by side in one run.

    sudo python3 bench/run.py [--link-mbit 80] [--big-mib 500] [--herd 10] [--reps 3] [--json FILE]

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
  (d) N concurrent cold pulls of one image: how often the cache fetched each blob
      from the upstream (the origin registry's access log);
  (e) what one authenticated request costs at the front (dockerd opens a new connection
      for every registry request), and a `docker push` + `docker pull` through it.

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
import json
import os
import platform
import re
import secrets
import ssl
import statistics
import subprocess
import sys
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

from testbed import images  # noqa: E402
from testbed.clients import DockerCli, free_port, make_unique_image, remove_local_image, wait_for_http  # noqa: E402
from testbed.registry_http import (  # noqa: E402
    Endpoint,
    SyntheticImage,
    pull_image,
    push_image,
    synthetic_image,
)
from testbed.stack import RealizedStack, realized_stack  # noqa: E402
from testbed.upstreams import StandinUpstream  # noqa: E402

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


def timed(bench: Bench, action: Callable[[], object], roles: tuple[str, ...] = ("front", "build")) -> Timed:
    containers = {role: bench.stack.container(role) for role in roles}
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


def _build_connection(bench: Bench, via_front: bool) -> tuple[http.client.HTTPConnection, dict[str, str]]:
    if via_front:
        host = bench.stack.address("build").rsplit(":", 1)[0]
        context = ssl.create_default_context(cafile=str(bench.stack.ca_file))
        connection = http.client.HTTPSConnection(host, bench.stack.https_port, context=context, timeout=900)
        return connection, {"Authorization": bench.auth_header}
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


def push_big(bench: Bench, blob: BigBlob, repository: str, via_front: bool) -> None:
    """POST, one streamed PATCH of the whole layer, PUT: what `docker push` does for a layer."""
    connection, headers = _build_connection(bench, via_front)
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


def pull_big(bench: Bench, blob: BigBlob, repository: str, via_front: bool) -> None:
    connection, headers = _build_connection(bench, via_front)
    try:
        connection.request("GET", f"/v2/{repository}/blobs/{blob.digest}", headers=headers)
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


def measure_big_layer(bench: Bench, mib: int, reps: int) -> dict[str, Any]:
    blob = BigBlob.make(mib)
    samples: dict[str, list[Timed]] = {key: [] for key in ("push_front", "push_direct", "pull_front", "pull_direct")}
    for rep in range(reps):
        # Alternate front and direct so that a busy moment of the machine hits both alike.
        pushed = f"bench/big-{rep}-{secrets.token_hex(3)}"
        for via_front, kind in ((True, "front"), (False, "direct")):
            push = functools.partial(push_big, bench, blob, f"{pushed}-{kind}", via_front)
            samples[f"push_{kind}"].append(timed(bench, push))
        for via_front, kind in ((True, "front"), (False, "direct")):
            pull = functools.partial(pull_big, bench, blob, f"{pushed}-front", via_front)
            samples[f"pull_{kind}"].append(timed(bench, pull))
    summary: dict[str, Any] = {"layer_mib": mib}
    for key, runs in samples.items():
        summary[key] = {
            "mb_per_s": round(statistics.median(blob.size / run.seconds / 1e6 for run in runs), 1),
            "runs_mb_per_s": [round(blob.size / run.seconds / 1e6, 1) for run in runs],
            "cpu_s_per_gb": _cpu_per_gb(runs, blob.size),
        }
    summary["push_front_over_direct"] = round(summary["push_front"]["mb_per_s"] / summary["push_direct"]["mb_per_s"], 2)
    summary["pull_front_over_direct"] = round(summary["pull_front"]["mb_per_s"] / summary["pull_direct"]["mb_per_s"], 2)
    return summary


def _cpu_per_gb(runs: list[Timed], size: int) -> dict[str, float | None]:
    result: dict[str, float | None] = {}
    for role in runs[0].cpu:
        values = [run.cpu[role] for run in runs]
        known = [value for value in values if value is not None]
        result[role] = round(statistics.median(known) / (size / 1e9), 2) if len(known) == len(values) else None
    return result


# -- (d): a herd of cold pulls -------------------------------------------------------------------


def measure_herd(bench: Bench, clients: int) -> dict[str, Any]:
    repository = f"library/bench-herd-{secrets.token_hex(3)}"
    image = seed(bench, repository, HERD_LAYER_MIB)
    barrier = threading.Barrier(clients)

    def one_pull() -> float:
        barrier.wait(timeout=60)
        return pull_image(bench.cache, repository, "1").seconds

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        latencies = list(pool.map(lambda _: one_pull(), range(clients)))
    wall = time.monotonic() - started
    wait_until_cached(bench, repository, image)
    fetches = origin_blob_fetches(bench, repository)
    link_bytes = sum(fetches[blob.digest] * blob.size for blob in image.blobs)
    return {
        "clients": clients, "image_mib": sum(HERD_LAYER_MIB), "wall_s": round(wall, 2),
        "slowest_pull_s": round(max(latencies), 2),
        "fetches_per_blob": {blob.digest[:19]: fetches[blob.digest] for blob in image.blobs},
        "upstream_bytes_over_image_bytes": round(link_bytes / image.total_bytes, 2),
    }


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


def report(results: dict[str, Any]) -> str:
    setup, pulls, big, herd, auth = (results[k] for k in ("setup", "pulls", "big_layer", "herd", "auth"))
    lines = [
        f"registry-stack bench, {setup['date']} on {setup['host']} ({setup['cpus']} CPUs, load before "
        f"{setup['load_before']}); upstream link {setup['link_mbit']} Mbit/s shared",
        "",
        f"(a) warm-cache pull vs direct from the throttled upstream, {pulls['image_mib']} MiB in "
        f"{pulls['layers']} layers:",
        f"    direct {pulls['direct_s']:.2f}s, warm cache {pulls['warm_s']:.2f}s -> "
        f"{pulls['a_warm_speedup_vs_direct']}x faster from the cache",
        "(b) cold pull through the cache vs direct:",
        f"    cold {pulls['cold_s']:.2f}s, direct {pulls['direct_s']:.2f}s -> cold/direct = "
        f"{pulls['b_cold_over_direct']}; upstream fetches per blob in a cold pull: "
        f"{[r['upstream_fetches_per_blob_cold'] for r in pulls['rounds']]}",
        f"(c) {big['layer_mib']} MiB layer, front (TLS + auth) vs direct to the build registry container:",
    ]
    for op in ("push", "pull"):
        front, direct = big[f"{op}_front"], big[f"{op}_direct"]
        lines.append(
            f"    {op}: front {front['mb_per_s']} MB/s, direct {direct['mb_per_s']} MB/s -> "
            f"front/direct = {big[f'{op}_front_over_direct']}; CPU s/GB front {front['cpu_s_per_gb']['front']}, "
            f"registry {front['cpu_s_per_gb']['build']} (direct: registry {direct['cpu_s_per_gb']['build']})"
        )
    lines += [
        f"(d) {herd['clients']} concurrent cold pulls of one {herd['image_mib']} MiB image: upstream fetches per "
        f"blob {list(herd['fetches_per_blob'].values())} (1 would be ideal); upstream bytes = "
        f"{herd['upstream_bytes_over_image_bytes']}x the image; all done in {herd['wall_s']}s",
        "(e) one authenticated request on a new connection (as dockerd makes each request): median "
        f"{auth['authenticated_request_ms_median']} ms, anonymous {auth['anonymous_request_ms_median']} ms; "
        f"docker push {auth['docker_push_s']}s (front CPU {auth['docker_push_front_cpu_s']}s), "
        f"docker pull {auth['docker_pull_s']}s (front CPU {auth['docker_pull_front_cpu_s']}s)",
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--link-mbit", type=float, default=80, help="bandwidth of the throttled upstream link")
    parser.add_argument("--big-mib", type=int, default=500, help="size of the layer of (c)")
    parser.add_argument("--herd", type=int, default=10, help="concurrent cold pulls in (d)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of (a)-(c); medians are reported")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--stack", default=f"bench-{os.environ.get('E2E_STACK', 'local')}", help="stack name")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/run.py needs root (like the e2e suite): sudo python3 bench/run.py")
    client = docker.from_env(timeout=600)
    images.build_all()
    started = time.monotonic()
    results: dict[str, Any] = {"setup": {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "host": platform.node(),
        "cpus": os.cpu_count(), "load_before": round(os.getloadavg()[0], 2), "link_mbit": args.link_mbit,
    }}
    with bench_stack(client, args.stack, args.link_mbit * 1e6 / 8) as bench:
        print("stack realized; measuring", file=sys.stderr, flush=True)
        results["pulls"] = measure_pulls_vs_upstream(bench, args.reps)
        results["big_layer"] = measure_big_layer(bench, args.big_mib, args.reps)
        results["herd"] = measure_herd(bench, args.herd)
        results["auth"] = measure_auth(bench)
    results["setup"]["total_s"] = round(time.monotonic() - started, 1)
    print(report(results))
    print(f"(whole run {results['setup']['total_s']}s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
