"""The metrics endpoint on the engine: every registry, the front and the agent, and `verify --stats`.

One stack (`<E2E_STACK>-metrics`) with `metricsPort` set. A pull through the cache must
move the counters: a miss first (the layers come from the upstream), a hit the second
time, bytes stored, the image at the top of the pulls.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import docker
import pytest

from testbed.clients import DockerCli, free_port, pull_and_forget, push_unique_image, wait_until
from testbed.stack import RealizedStack, realized_stack
from testbed.upstreams import StandinUpstream
from tests.harness import ROOT

Metrics = tuple[RealizedStack, StandinUpstream]
# Docker's bridge networks come from these ranges; the host's own requests arrive through
# docker-proxy from the stack network's gateway (README, "Limiting cache reads").
PRIVATE_RANGES = ["172.16.0.0/12", "192.168.0.0/16", "10.0.0.0/8"]


@pytest.fixture(scope="module")
def metrics_stack(docker_client: docker.DockerClient, local_images: dict[str, str]) -> Iterator[Metrics]:
    overrides = {"metricsPort": free_port(), "metricsClientNetworks": PRIVATE_RANGES}
    stack_name = f"{os.environ.get('E2E_STACK', 'e2e')}-metrics"
    with realized_stack(docker_client, stack_name, overrides=overrides) as (stack, upstream):
        assert upstream is not None
        yield stack, upstream


def _get(stack: RealizedStack, path: str) -> str:
    with urllib.request.urlopen(f"{stack.outputs['metricsUrl']}{path}", timeout=30) as answer:
        return answer.read().decode()


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text; 0 when it is absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _total(text: str, name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(\{{[^}}]*\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_a_pull_through_the_cache_moves_the_metrics(metrics_stack: Metrics, docker_cli: DockerCli) -> None:
    stack, upstream = metrics_stack
    before = _get(stack, "/metrics/agent")
    push_unique_image(docker_cli, f"{upstream.local_address}/library/counted:1", layers=2)
    reference = f"{stack.address('cache')}/library/counted:1"
    pull_and_forget(docker_cli, reference)  # cold: misses
    pull_and_forget(docker_cli, reference)  # warm: hits

    after = _get(stack, "/metrics/agent")

    def moved(counter: str, kind: str) -> float:
        name = f"registry_stack_proxy_{counter}_total"
        return _sample(after, name, upstream="docker", type=kind) - _sample(before, name, upstream="docker", type=kind)

    for counter in ("misses", "hits", "requests", "pulled_bytes", "pushed_bytes"):
        assert moved(counter, "manifest") > 0, f"manifest {counter} did not move:\n{after}"
    for counter in ("requests", "pushed_bytes"):
        assert moved(counter, "blob") > 0, f"blob {counter} did not move:\n{after}"
    # distribution 2.8 (this engine's registry) counts no blob miss: the agent leaves those out.
    assert "registry_stack_proxy_misses_total{upstream=\"docker\",type=\"blob\"}" not in after
    assert _sample(after, "registry_stack_storage_cap_bytes", registry="docker") == 0
    stored = wait_until(
        lambda: _positive(_sample(_get(stack, "/metrics/agent"), "registry_stack_storage_bytes", registry="docker")),
        30, "the cache's stored bytes",
    )
    assert stored > 2 * 4096  # two random layers at least

    cache = _get(stack, "/metrics/cache")
    assert _total(cache, "registry_http_requests_total", handler="manifest") > 0
    assert _total(cache, "registry_http_requests_total", handler="blob") > 0
    build = _get(stack, "/metrics/build")
    assert "registry_http_in_flight_requests" in build
    front = _get(stack, "/metrics")
    assert _total(front, "caddy_http_requests_total") > 0, front[:2000]

    # Caddy writes an access-log line once the request is done; give the last one a moment.
    docker_hub = wait_until(lambda: _pulls_counted(stack, "library/counted", 2), 20, "both pulls counted")
    assert 0 < docker_hub["hitRatio"] < 1


def _pulls_counted(stack: RealizedStack, repository: str, pulls: int) -> dict:
    stats = json.loads(_get(stack, "/stats"))
    docker_hub = next(r for r in stats["registries"] if r["name"] == "docker")
    assert {"repository": repository, "pulls": pulls} in docker_hub["topPulls"], docker_hub["topPulls"]
    return docker_hub


def _positive(value: float) -> float:
    assert value > 0
    return value


def test_verify_stats_prints_the_tables(metrics_stack: Metrics, docker_cli: DockerCli) -> None:
    stack, upstream = metrics_stack
    push_unique_image(docker_cli, f"{upstream.local_address}/library/tabled:1")
    pull_and_forget(docker_cli, f"{stack.address('cache')}/library/tabled:1")
    outputs = json.dumps(stack.outputs)
    result = subprocess.run(
        [sys.executable, "-m", "registry_verify", "--stats", "--outputs", "-"], input=outputs, text=True,
        capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT / "tools")}, check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("registry"))
    assert header.split() == ["registry", "kind", "hit", "ratio", "misses/pulls", "from", "upstream", "stored",
                              "cap"]
    docker_row = next(line for line in lines if line.startswith("docker "))
    assert re.search(r"\d+\.\d%", docker_row), docker_row
    assert any("library/tabled" in line for line in lines), result.stdout


def test_the_registries_debug_endpoints_stay_closed(metrics_stack: Metrics) -> None:
    stack, _ = metrics_stack
    answer = _get_status(stack, "/metrics/cache/../../debug/pprof/")
    assert answer != 200
    assert _get_status(stack, "/debug/vars") == 404


def _get_status(stack: RealizedStack, path: str) -> int:
    try:
        with urllib.request.urlopen(f"{stack.outputs['metricsUrl']}{path}", timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
