"""orchestrator=swarm on a real three-node swarm (tests/e2e/swarm.py): validation on every
node's front, a rolling update under load, and node loss under load.

The program is declared as `pulumi up` would run it, with the realizer creating each Service,
Secret and ServiceConfig through the manager's engine (testbed/realize_swarm.py). The stand-in
upstream runs on the bed's network; clients are this machine's Python (testbed/registry_http.py),
which reaches each node at its address on the bed network, TLS checked against the stack's CA.

A client of a swarm stack knows every node (DaemonMirror in swarm mode lists each node's front
as a mirror, its own first); a request "fails" only when no node answers it, as dockerd then
gives up on its mirrors. Each node's own failures are counted and reported too.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
import pytest

from testbed import E2E_STACK_LABEL, images
from testbed.clients import wait_until
from testbed.realize import EngineState
from testbed.realize_swarm import SwarmMocks
from testbed.registry_http import Endpoint, RegistryError, pull_image, push_image, synthetic_image
from testbed.stack import e2e_values, remove_leftovers, secret_keys_of
from tests.e2e import hosts as host_bed_module
from tests.e2e import swarm as swarm_bed_module
from tests.e2e.host_stack import seed, start_named_standin, unique_repository
from tests.harness import declare, unwrap

pytestmark = pytest.mark.e2e
NODES = swarm_bed_module.NODE_NAMES
ADMIN = "admin"


def stack_name() -> str:
    return f"{os.environ.get('E2E_STACK', 'e2e')}-swarm"


@dataclass
class SwarmSite:
    """The swarm, the stand-in upstream, and the stack's state between `pulumi up`s."""

    client: docker.DockerClient
    bed: swarm_bed_module.SwarmBed
    stack: str
    upstream_url: str
    standin: Any
    state: EngineState = field(default_factory=EngineState)
    users: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    ca_file: str = ""
    mocks: list[SwarmMocks] = field(default_factory=list)

    def values(self) -> dict[str, Any]:
        return e2e_values("Pulumi.dev.yaml", {
            "domain": f"{self.stack}.internal.network",
            "orchestrator": "swarm",
            "swarmNodes": list(NODES),
            "bindAddress": "0.0.0.0",
            "users": list(self.users),
            "upstreams": [f"docker={self.upstream_url}"],
        })

    def up(self) -> float:
        """One `pulumi up`; the seconds it took."""
        started = time.monotonic()
        mocks = SwarmMocks(self.bed.manager, self.state)
        values = self.values()
        declaration = declare(values, secret_keys=secret_keys_of(values), stack=self.stack, mocks=mocks)
        if mocks.errors:
            raise mocks.errors[0]
        mocks.finish()
        self.mocks.append(mocks)
        self.outputs = {key: unwrap(value) for key, value in declaration.outputs.items()}
        if not self.ca_file:
            handle, self.ca_file = tempfile.mkstemp(suffix=".pem")
            os.write(handle, self.outputs["caCertPem"].encode())
            os.close(handle)
        return time.monotonic() - started

    def endpoint(self, node: str, output: str, user: str = "") -> Endpoint:
        auth = ""
        if user:
            password = next(entry.split(":", 1)[1] for entry in self.users if entry.startswith(f"{user}:"))
            auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return Endpoint(self.outputs[output], ca_file=self.ca_file, auth_header=auth, address=self.bed.address(node))


@pytest.fixture(scope="module")
def site(docker_client: docker.DockerClient, local_images: dict[str, str]) -> Iterator[SwarmSite]:
    stack = stack_name()
    labels = {E2E_STACK_LABEL: stack}
    host_bed_module.remove_leftover_hosts(docker_client, labels)
    remove_leftovers(docker_client, stack)
    network_name = f"registry-stack-{stack}-bed"
    with contextlib.suppress(docker.errors.NotFound):
        docker_client.networks.get(network_name).remove()
    docker_client.networks.create(network_name, driver="bridge", labels=labels)
    try:
        standin = start_named_standin(docker_client, network_name, stack, "upstream.swarm.test")
        container = docker_client.containers.get(standin.container)
        address = container.attrs["NetworkSettings"]["Networks"][network_name]["IPAddress"]
        tags = [images.REGISTRY.tag, images.CADDY.tag, images.PYTHON.tag, images.VARNISH.tag]
        with swarm_bed_module.swarm_bed(docker_client, network_name, f"registry-stack-{stack}-node", labels,
                                        tags) as bed:
            site = SwarmSite(docker_client, bed, stack, f"http://{address}", standin,
                             users=[f"{ADMIN}:{secrets.token_urlsafe(18)}"])
            seconds = site.up()
            print(f"\nswarm bed {bed.timings}, first pulumi up {seconds:.0f} s")
            yield site
    finally:
        remove_leftovers(docker_client, stack)
        with contextlib.suppress(docker.errors.APIError):
            docker_client.networks.get(network_name).remove()


def test_every_nodes_front_serves_the_write_up_validation(site: SwarmSite) -> None:
    """Push through node1, then on every node: pull, catalog, tags, manifest, 401, 405, cache pull."""
    image = synthetic_image([64 * 1024, 32 * 1024])
    repository = unique_repository("swarm-validate")
    push_image(site.endpoint(NODES[0], "buildUrl", ADMIN), repository, "1", image)
    cached = unique_repository("swarm-cached")
    seed(site.standin, cached)
    for node in NODES:
        build = site.endpoint(node, "buildUrl", ADMIN)
        assert pull_image(build, repository, "1").blob_digests == [b.digest for b in image.blobs]
        assert pull_image(build, repository, image.manifest_digest).bytes_received == image.total_bytes + len(
            image.manifest)
        assert repository in node_get(site, node, "buildUrl", "/v2/_catalog", ADMIN).json()["repositories"]
        assert node_get(site, node, "buildUrl", f"/v2/{repository}/tags/list", ADMIN).json()["tags"] == ["1"]
        assert node_get(site, node, "buildUrl", "/v2/").status == 401
        assert node_get(site, node, "cacheUrl", "/v2/x/blobs/uploads/", method="POST").status == 405
        pull_image(site.endpoint(node, "cacheUrl"), cached, "1")


@dataclass
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def node_get(site: SwarmSite, node: str, output: str, path: str, user: str = "", method: str = "GET") -> Answer:
    """One request to `node`'s front under the public name of `output` (TLS checked)."""
    endpoint = site.endpoint(node, output, user)
    connection = endpoint.connect(timeout=30)
    try:
        connection.request(method, path, headers=endpoint.headers())
        answer = connection.getresponse()
        return Answer(answer.status, answer.read())
    finally:
        connection.close()


@dataclass
class Load:
    """Clients pulling in a loop, each request tried on every node in turn (its mirrors)."""

    site: SwarmSite
    targets: list[tuple[str, str, str]]  # (output, repository, reference)
    nodes: tuple[str, ...] = NODES
    failed: int = 0
    served: int = 0
    node_failures: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            for output, repository, reference in self.targets:
                self._one(output, repository, reference)

    def _one(self, output: str, repository: str, reference: str) -> None:
        for node in self.nodes:
            user = ADMIN if output == "buildUrl" else ""
            try:
                pull_image(self.site.endpoint(node, output, user), repository, reference)
            except (RegistryError, OSError):
                self.node_failures[node] = self.node_failures.get(node, 0) + 1
                continue
            self.served += 1
            return
        self.failed += 1

    @contextlib.contextmanager
    def running(self, clients: int = 2) -> Iterator[Load]:
        threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(timeout=120)


def pushed_and_cached(site: SwarmSite) -> list[tuple[str, str, str]]:
    repository = unique_repository("swarm-load")
    push_image(site.endpoint(NODES[0], "buildUrl", ADMIN), repository, "1", synthetic_image([256 * 1024]))
    cached = unique_repository("swarm-load-cached")
    seed(site.standin, cached)
    pull_image(site.endpoint(NODES[0], "cacheUrl"), cached, "1")
    return [("buildUrl", repository, "1"), ("cacheUrl", cached, "1")]


def test_a_new_user_rolls_through_the_nodes_without_a_failed_request(site: SwarmSite) -> None:
    targets = pushed_and_cached(site)
    newcomer = f"carol:{secrets.token_urlsafe(18)}"
    with Load(site, targets).running() as load:
        time.sleep(2)
        site.users.append(newcomer)
        seconds = site.up()
        time.sleep(2)
    steps = dict((name, step) for step, name in site.state.steps)
    print(f"\nrolling update {seconds:.0f} s: {load.served} pulls served, {load.failed} failed, "
          f"per node failures {load.node_failures}")
    assert all(steps[f"registry-front-{node}"] == "update" for node in NODES), steps
    assert load.failed == 0 and load.served > 0
    # The new user pushes and pulls on every node.
    image = synthetic_image([16 * 1024])
    repository = unique_repository("swarm-carol")
    push_image(site.endpoint(NODES[1], "buildUrl", "carol"), repository, "1", image)
    for node in NODES:
        pull_image(site.endpoint(node, "buildUrl", "carol"), repository, "1")


def test_losing_a_node_keeps_pulls_working_and_loses_nothing(site: SwarmSite) -> None:
    targets = pushed_and_cached(site)
    lost = NODES[2]
    with Load(site, targets).running() as load:
        time.sleep(2)
        site.bed.stop_engine(lost)
        time.sleep(15)
    print(f"\nnode loss of {lost}: {load.served} pulls served, {load.failed} failed, per node {load.node_failures}")
    assert load.failed == 0 and load.served > 0
    for node in NODES[:2]:
        for output, repository, reference in targets:
            pull_image(site.endpoint(node, output, ADMIN if output == "buildUrl" else ""), repository, reference)
    # The node comes back: swarm restarts its services and its front serves what it served.
    site.bed.start_engine(lost)
    started = time.monotonic()
    wait_until(lambda: _serves_everything(site, lost, targets), 180, f"{lost}'s front serving again")
    print(f"{lost} back and serving {time.monotonic() - started:.0f} s after its dockerd started")


def _serves_everything(site: SwarmSite, node: str, targets: list[tuple[str, str, str]]) -> None:
    """Pull every target through the node's front; an error says what is not served yet."""
    for output, repository, reference in targets:
        try:
            pull_image(site.endpoint(node, output, ADMIN if output == "buildUrl" else ""), repository, reference)
        except RegistryError as error:
            raise AssertionError(f"{output} {repository}:{reference}: {error}") from error
