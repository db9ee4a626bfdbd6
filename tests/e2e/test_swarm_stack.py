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

import contextlib
import http.client
import io
import json
import os
import secrets
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import docker
import pytest

from testbed import E2E_STACK_LABEL, images
from testbed.clients import wait_until
from testbed.realize import EngineState
from testbed.realize_swarm import SwarmMocks
from testbed.registry_http import Endpoint, RegistryError, SyntheticImage, pull_image, push_image, synthetic_image
from testbed.stack import e2e_values, secret_keys_of
from tests.e2e import swarm as swarm_bed_module
from tests.e2e.host_stack import seed, unique_repository
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
    # Keys a test changes between `pulumi up`s (the build registry's storage and replicas).
    extra: dict[str, Any] = field(default_factory=dict)
    bucket: Bucket | None = None

    def values(self) -> dict[str, Any]:
        return e2e_values("Pulumi.dev.yaml", {
            "domain": f"{self.stack}.internal.network",
            "orchestrator": "swarm",
            "swarmNodes": list(NODES),
            "bindAddress": "0.0.0.0",
            "users": list(self.users),
            "upstreams": [f"docker={self.upstream_url}"],
            **self.extra,
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
        auth = swarm_bed_module.basic_auth(self.users, user) if user else ""
        return Endpoint(self.outputs[output], ca_file=self.ca_file, auth_header=auth, address=self.bed.address(node))


@dataclass
class Bucket:
    """The S3-compatible store (moto's server, testbed/images.py MOTO) and its one bucket."""

    url: str  # http://<address>:<port>, reachable from the nodes' tasks and from here
    name: str = "registry-stack-build"
    prefix: str = "site"
    # moto does not check signatures; the driver signs with these all the same.
    credentials: str = "AKIAREGISTRYSTACK:e2e-not-a-real-secret"

    def storage_url(self) -> str:
        return f"s3://{self.name}/{self.prefix}?region=us-east-1&endpoint={self.url}"

    def put(self, key: str, data: bytes) -> None:
        request = urllib.request.Request(f"{self.url}/{self.name}/{key}", data=data, method="PUT",
                                         headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200, answer.status

    def object_keys(self) -> list[str]:
        """Every key under the prefix (ListObjectsV2, page by page)."""
        keys: list[str] = []
        token = ""
        while True:
            query = f"list-type=2&prefix={self.prefix}/" + (f"&continuation-token={urllib.parse.quote(token)}"
                                                           if token else "")
            with urllib.request.urlopen(f"{self.url}/{self.name}?{query}", timeout=30) as answer:
                root = ElementTree.fromstring(answer.read())
            ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
            keys += [element.text or "" for element in root.findall("s3:Contents/s3:Key", ns)]
            token = root.findtext("s3:NextContinuationToken", "", ns)
            if not token:
                return keys


def start_bucket(client: docker.DockerClient, network: str, stack: str) -> Bucket:
    """moto on the bed's network (the nodes' tasks reach it through their gateway), one bucket made."""
    tag = images.build_moto()
    name = f"registry-stack-{stack}-s3"
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True)
    container = client.containers.run(tag, name=name, network=network, labels={E2E_STACK_LABEL: stack}, detach=True)
    container.reload()
    address = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
    bucket = Bucket(f"http://{address}:{images.MOTO_PORT}")

    def make() -> None:
        request = urllib.request.Request(f"{bucket.url}/{bucket.name}", method="PUT")
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200, answer.status

    wait_until(make, 60, "moto's server")
    return bucket


@pytest.fixture(scope="module")
def site(docker_client: docker.DockerClient, local_images: dict[str, str]) -> Iterator[SwarmSite]:
    stack = stack_name()
    with swarm_bed_module.bed_network(docker_client, stack, "upstream.swarm.test") as network:
        bucket = start_bucket(docker_client, network.name, stack)
        with swarm_bed_module.swarm_bed(docker_client, network.name, f"registry-stack-{stack}-node",
                                        network.labels, swarm_bed_module.STACK_IMAGES) as bed:
            site = SwarmSite(docker_client, bed, stack, network.upstream_url, network.standin,
                             users=[f"{ADMIN}:{secrets.token_urlsafe(18)}"], bucket=bucket)
            seconds = site.up()
            print(f"\nswarm bed {bed.timings}, first pulumi up {seconds:.0f} s")
            yield site


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


# What a client gets from a node that is gone or going: a refused, reset or timed-out
# connection or a failed handshake (OSError), an answer cut off mid-way (HTTPException, which
# is no OSError), or an answer it cannot use (RegistryError). Each means: try the next node.
NODE_ERRORS = (RegistryError, OSError, http.client.HTTPException)


@contextlib.contextmanager
def looping(step: Callable[[], None], clients: int) -> Iterator[None]:
    """`clients` threads calling `step` over and over until the block ends."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            step()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)


@dataclass
class Load:
    """Clients pulling in a loop, each request tried on every node in turn (its mirrors)."""

    site: SwarmSite
    targets: list[tuple[str, str, str]]  # (output, repository, reference)
    nodes: tuple[str, ...] = NODES
    failed: int = 0
    served: int = 0
    node_failures: dict[str, int] = field(default_factory=dict)

    def round(self) -> None:
        for output, repository, reference in self.targets:
            self._one(output, repository, reference)

    def _one(self, output: str, repository: str, reference: str) -> None:
        for node in self.nodes:
            user = ADMIN if output == "buildUrl" else ""
            try:
                pull_image(self.site.endpoint(node, output, user), repository, reference)
            except NODE_ERRORS:
                self.node_failures[node] = self.node_failures.get(node, 0) + 1
                continue
            self.served += 1
            return
        self.failed += 1

    @contextlib.contextmanager
    def running(self, clients: int = 2) -> Iterator[Load]:
        with looping(self.round, clients):
            yield self


@dataclass(frozen=True)
class Pushed:
    """An image a client pushed, kept to check later that the registry still has it whole."""

    repository: str
    tag: str
    image: SyntheticImage


@dataclass
class PushLoad:
    """One client pushing a new unique image in a loop, each push tried on the nodes in turn,
    `nodes[0]` first (its preferred front), as a CI runner with one name per node retries: a
    push that fails on one node is pushed again whole on the next (blobs already uploaded
    through the failed node are simply uploaded again)."""

    site: SwarmSite
    nodes: tuple[str, ...]
    pushed: list[Pushed] = field(default_factory=list)
    first_time: int = 0
    retried: int = 0  # succeeded on a later node after failing on the ones before it
    failed: int = 0  # failed on every node
    node_failures: dict[str, int] = field(default_factory=dict)
    # How the attempts failed (exception names): a push cut off in flight, or refused outright.
    reasons: dict[str, int] = field(default_factory=dict)
    longest_failure: float = 0.0  # seconds one failed attempt took: refused at once or timed out

    def push(self) -> None:
        pushed = Pushed(unique_repository("swarm-pushload"), "1", synthetic_image([128 * 1024]))
        for attempt, node in enumerate(self.nodes):
            if self._push_on(node, pushed):
                self.pushed.append(pushed)
                if attempt == 0:
                    self.first_time += 1
                else:
                    self.retried += 1
                return
        self.failed += 1

    def _push_on(self, node: str, pushed: Pushed) -> bool:
        started = time.monotonic()
        try:
            push_image(self.site.endpoint(node, "buildUrl", ADMIN), pushed.repository, pushed.tag, pushed.image)
        except NODE_ERRORS as error:
            self.node_failures[node] = self.node_failures.get(node, 0) + 1
            self.reasons[type(error).__name__] = self.reasons.get(type(error).__name__, 0) + 1
            self.longest_failure = max(self.longest_failure, time.monotonic() - started)
            return False
        return True

    @contextlib.contextmanager
    def running(self) -> Iterator[PushLoad]:
        # One client: its pushes are in order, and the counters need no lock.
        with looping(self.push, 1):
            yield self


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
    """Lose one node (its dockerd and every task on it) while two clients pull and one pushes, the
    pusher preferring the lost node: no pull and no push fails on every node, and every image
    pushed before or during the loss pulls whole from the other nodes, and from the lost one once
    it is back."""
    targets = pushed_and_cached(site)
    lost = NODES[2]
    survivors = tuple(node for node in NODES if node != lost)
    with Load(site, targets).running() as load, PushLoad(site, (lost, *survivors)).running() as pushes:
        time.sleep(2)
        orphans = site.bed.stop_engine(lost)
        time.sleep(15)
    print(f"\nnode loss of {lost} ({orphans} task processes outlived its dockerd, killed): {load.served} pulls "
          f"served, {load.failed} failed, per node {load.node_failures}; pushes preferring {lost}: "
          f"{pushes.first_time} first time, {pushes.retried} after a retry on another node, {pushes.failed} failed "
          f"on every node, per node {pushes.node_failures} {pushes.reasons}, longest failed attempt "
          f"{pushes.longest_failure:.1f} s")
    assert load.failed == 0 and load.served > 0
    assert pushes.failed == 0 and pushes.retried > 0, "the pusher's pushes moved to another node"
    for node in survivors:
        _serves_everything(site, node, targets)
        _has_every_push(site, node, pushes.pushed)
    # The node comes back: swarm restarts its services and its front serves what it served.
    site.bed.start_engine(lost)
    started = time.monotonic()
    wait_until(lambda: _serves_everything(site, lost, targets), 180, f"{lost}'s front serving again")
    print(f"{lost} back and serving {time.monotonic() - started:.0f} s after its dockerd started")
    _has_every_push(site, lost, pushes.pushed)


def _serves_everything(site: SwarmSite, node: str, targets: list[tuple[str, str, str]]) -> None:
    """Pull every target through the node's front; an error says what is not served yet."""
    for output, repository, reference in targets:
        try:
            pull_image(site.endpoint(node, output, ADMIN if output == "buildUrl" else ""), repository, reference)
        except RegistryError as error:
            raise AssertionError(f"{output} {repository}:{reference}: {error}") from error


def _has_every_push(site: SwarmSite, node: str, pushed: list[Pushed]) -> None:
    """Every pushed image pulls through the node's front by its tag with the blobs it was pushed
    with (each blob's bytes checked against its digest), and by its manifest's digest."""
    endpoint = site.endpoint(node, "buildUrl", ADMIN)
    for push in pushed:
        try:
            served = pull_image(endpoint, push.repository, push.tag).blob_digests
            pull_image(endpoint, push.repository, push.image.manifest_digest)
        except RegistryError as error:
            raise AssertionError(f"{push.repository}:{push.tag} on {node}: {error}") from error
        assert served == [blob.digest for blob in push.image.blobs], f"{push.repository}:{push.tag} on {node}"


def test_the_build_registry_moves_into_the_bucket_and_scales_to_three_and_back(site: SwarmSite) -> None:
    """Migrate the build data of the volume into the bucket (README "More than one host"), then
    buildReplicas 1 -> 3 -> 1: every image pushed at any step pulls on every node after each."""
    assert site.bucket is not None
    pushed: list[tuple[str, str]] = []

    def push(node: str, name: str) -> None:
        repository = unique_repository(name)
        push_image(site.endpoint(node, "buildUrl", ADMIN), repository, "1", synthetic_image([96 * 1024]))
        pushed.append((repository, "1"))

    def every_image_pulls_everywhere(step: str) -> None:
        for node in NODES:
            for repository, reference in pushed:
                try:
                    pull_image(site.endpoint(node, "buildUrl", ADMIN), repository, reference)
                except RegistryError as error:
                    raise AssertionError(f"{step}: {repository}:{reference} on {node}: {error}") from error

    push(NODES[0], "swarm-before-bucket")
    copied = copy_build_volume_into_bucket(site)
    site.extra = {"buildStorage": site.bucket.storage_url(),
                  "buildStorageCredentials": site.bucket.credentials, "buildReplicas": 1}
    seconds = {"volume -> bucket": site.up()}
    assert not build_service_mounts(site), "the build registry on a bucket has no volume"
    every_image_pulls_everywhere("after the move into the bucket")
    push(NODES[1], "swarm-on-bucket")
    assert any(key.endswith("/_manifests/tags/1/current/link") and pushed[-1][0] in key
               for key in site.bucket.object_keys()), "a push on the bucket lands in the bucket"

    site.extra["buildReplicas"] = 3
    seconds["1 -> 3"] = site.up()
    assert build_tasks_running(site) == 3
    push(NODES[2], "swarm-three-replicas")
    every_image_pulls_everywhere("at three replicas")

    site.extra["buildReplicas"] = 1
    seconds["3 -> 1"] = site.up()
    assert build_tasks_running(site) == 1
    every_image_pulls_everywhere("back at one replica")
    print(f"\nbuild data moved into the bucket: {copied} objects; pulumi up seconds {seconds}; "
          f"{len(pushed)} images pull on {len(NODES)} nodes after every step")


def copy_build_volume_into_bucket(site: SwarmSite) -> int:
    """What `aws s3 sync <volume>/docker s3://<bucket>/<prefix>/docker` does: the filesystem
    driver's tree under its rootdirectory is the s3 driver's under its rootdirectory (both
    storagedriver layouts are the same paths), so each file becomes the object of that key."""
    assert site.bucket is not None
    host = site.bed.nodes[NODES[0]]  # the volume's node (swarmNodes[0])
    volume = f"registry-stack-{site.stack}-build-data"
    archive = subprocess.run(
        ["docker", "exec", host.container.name, "tar", "-C", f"/var/lib/docker/volumes/{volume}/_data", "-c", "docker"],
        capture_output=True, check=True, timeout=120,
    ).stdout
    count = 0
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar:
            if member.isfile():
                data = tar.extractfile(member)
                assert data is not None
                site.bucket.put(f"{site.bucket.prefix}/{member.name}", data.read())
                count += 1
    return count


def build_service(site: SwarmSite) -> Any:
    return site.bed.manager.services.get(f"registry-stack-{site.stack}-build")


def build_service_mounts(site: SwarmSite) -> list[Any]:
    spec = build_service(site).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
    return list(spec.get("Mounts") or [])


def build_tasks_running(site: SwarmSite) -> int:
    tasks = build_service(site).tasks(filters={"desired-state": "running"})
    return sum(1 for task in tasks if task["Status"]["State"] == "running")
