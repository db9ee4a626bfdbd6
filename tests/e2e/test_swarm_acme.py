"""ACME in swarm mode on a real three-node swarm, against Pebble: one front orders, every node serves.

The stage stack file (Let's Encrypt staging mode) with orchestrator=swarm, its directory pointed
at Pebble (acmeDirectoryUrl, acmeTrustedRootPem), as a user points a stack at a private ACME CA.
Pebble runs on node1's engine, on the stack's overlay network under the alias `pebble` (started
by the realizer's network hook, before any service). It resolves the registry names through its
/etc/hosts to node2's address, so every HTTP-01 challenge reaches a front that does not order:
it passes only if node2 forwards it to node1's front, the orderer (components/tls_share.py).

Every TLS check verifies against Pebble's issuing root only.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
import pytest
from cryptography import x509

from components import naming
from testbed import images
from testbed.clients import wait_until
from testbed.pebble import Pebble, PebbleApiCertificate, make_pebble_api_certificate, pebble_directory_url, start_pebble
from testbed.realize import EngineState
from testbed.realize_swarm import SwarmMocks
from testbed.registry_http import Endpoint, pull_image, push_image, synthetic_image
from testbed.stack import e2e_values, secret_keys_of
from testbed.trust import served_certificate
from tests.e2e import swarm as swarm_bed_module
from tests.e2e.host_stack import seed, unique_repository
from tests.harness import declare, unwrap

pytestmark = pytest.mark.e2e
NODES = swarm_bed_module.NODE_NAMES
ORDERER, VALIDATOR = NODES[0], NODES[1]  # Pebble validates through node2's front
ADMIN = "admin"
# Caddy orders in the background once the front runs; Pebble answers at once (PEBBLE_VA_NOSLEEP),
# a copy fetches every 5 s until it has every certificate.
CERTIFICATE_SECONDS = 180


def stack_name() -> str:
    return f"{os.environ.get('E2E_STACK', 'e2e')}-swacme"


@dataclass
class AcmeSwarm:
    client: docker.DockerClient
    bed: swarm_bed_module.SwarmBed
    stack: str
    domain: str
    upstream_url: str
    standin: Any
    api: PebbleApiCertificate
    pebbles: list[Pebble] = field(default_factory=list)
    state: EngineState = field(default_factory=EngineState)
    users: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    # Pebble's issuing root (read once: Pebble runs on node1, which a test stops) and its file.
    root: str = ""
    root_file: str = ""

    @property
    def hostnames(self) -> list[str]:
        return [naming.build_hostname(self.domain), naming.cache_hostname(naming.DOCKER_HUB_NAME, self.domain)]

    @property
    def pebble(self) -> Pebble:
        return self.pebbles[0]

    def values(self) -> dict[str, Any]:
        return e2e_values("Pulumi.stage.yaml", {
            "domain": self.domain,
            "orchestrator": "swarm",
            "swarmNodes": list(NODES),
            "bindAddress": "0.0.0.0",
            "users": list(self.users),
            "upstreams": [f"docker={self.upstream_url}"],
            "acmeDirectoryUrl": pebble_directory_url(),
            "acmeTrustedRootPem": self.api.ca_pem,
        })

    def up(self) -> float:
        started = time.monotonic()
        mocks = SwarmMocks(self.bed.manager, self.state, on_network=self._start_pebble)
        values = self.values()
        declaration = declare(values, secret_keys=secret_keys_of(values), stack=self.stack, mocks=mocks)
        if mocks.errors:
            raise mocks.errors[0]
        mocks.finish()
        self.outputs = {key: unwrap(value) for key, value in declaration.outputs.items()}
        return time.monotonic() - started

    def _start_pebble(self, network: str) -> None:
        """Pebble on node1's engine, on the stack's overlay (the fronts dial `pebble:14000`)."""
        if self.pebbles:
            return
        validator = self.bed.address(VALIDATOR)
        self.pebbles.append(start_pebble(
            self.bed.clients[ORDERER], network, f"registry-stack-{self.stack}-pebble", self.api,
            hosts={name: validator for name in self.hostnames}, management_address=self.bed.address(ORDERER),
        ))

    def trust_pebbles_root(self) -> None:
        self.root = self.pebble.issuing_root_pem()
        handle, self.root_file = tempfile.mkstemp(suffix=".pem")
        os.write(handle, self.root.encode())
        os.close(handle)

    def served(self, node: str, hostname: str) -> x509.Certificate:
        return served_certificate(443, hostname, self.root, address=self.bed.address(node))

    def endpoint(self, node: str, output: str, user: str = "") -> Endpoint:
        auth = swarm_bed_module.basic_auth(self.users, user) if user else ""
        return Endpoint(self.outputs[output], ca_file=self.root_file, auth_header=auth,
                        address=self.bed.address(node))


@pytest.fixture(scope="module")
def site(docker_client: docker.DockerClient, local_images: dict[str, str]) -> Iterator[AcmeSwarm]:
    stack = stack_name()
    with swarm_bed_module.bed_network(docker_client, stack, "upstream.swacme.test") as network:
        tags = [*swarm_bed_module.STACK_IMAGES, images.PEBBLE.tag]
        with swarm_bed_module.swarm_bed(docker_client, network.name, f"registry-stack-{stack}-node",
                                        network.labels, tags) as bed:
            api = make_pebble_api_certificate(addresses=(bed.address(ORDERER),))
            site = AcmeSwarm(docker_client, bed, stack, f"{stack}.internal.network", network.upstream_url,
                             network.standin, api=api, users=[f"{ADMIN}:{secrets.token_urlsafe(18)}"])
            seconds = site.up()
            site.trust_pebbles_root()
            print(f"\nswarm bed {bed.timings}, first pulumi up {seconds:.0f} s")
            yield site


def every_node_serves(site: AcmeSwarm, nodes: tuple[str, ...] = NODES) -> dict[tuple[str, str], int]:
    """(node, hostname) -> serial of the certificate served, once every node serves every name."""
    serials: dict[tuple[str, str], int] = {}
    for node in nodes:
        for hostname in site.hostnames:
            try:
                serials[(node, hostname)] = wait_until(
                    lambda n=node, h=hostname: site.served(n, h), CERTIFICATE_SECONDS,
                    f"{node}'s front serving {hostname} under Pebble's root").serial_number
            except AssertionError as error:
                raise AssertionError(f"{error}\n{node}'s front log:\n{front_log(site, node)}") from error
    return serials


def front_log(site: AcmeSwarm, node: str) -> str:
    """The lines of a front's log that tell what its ACME or copy side did (for a failure's message)."""
    lines = front_container(site, node).logs(tail=400).decode(errors="replace").splitlines()
    telling = [line for line in lines if '"level":"info","ts"' not in line or "tls" in line]
    return "\n".join(line[:400] for line in telling[-25:])


def front_container(site: AcmeSwarm, node: str) -> Any:
    """The running task container of a node's front (an AssertionError while there is none)."""
    name = f"registry-stack-{site.stack}-front-{node}"
    running = site.bed.clients[node].containers.list(filters={"label": f"com.docker.swarm.service.name={name}"})
    assert len(running) == 1, f"{len(running)} running tasks of {name} on {node}"
    return running[0]


def test_one_front_orders_and_every_node_serves_its_certificates(site: AcmeSwarm) -> None:
    started = time.monotonic()
    serials = every_node_serves(site)
    print(f"\nevery node served every name {time.monotonic() - started:.0f} s after pulumi up; "
          f"Pebble orders {site.pebble.orders_placed()}, accounts {site.pebble.accounts_registered()}")
    assert sorted(site.outputs["hostnames"]) == sorted(site.hostnames)
    for hostname in site.hostnames:
        assert len({serials[(node, hostname)] for node in NODES}) == 1, f"{hostname}: one certificate everywhere"
    # One certificate per name, not one per node, under one account: only the orderer ordered.
    # (Orders may be more: on the first `pulumi up` node2's front starts after node1's, and an
    # order whose challenge Pebble sent to node2 before it ran failed and was placed again.)
    issued = [int(s, 16) for s in site.pebble.issued_serials()]
    assert len(issued) == len(site.hostnames) and set(issued) == set(serials.values())
    assert site.pebble.accounts_registered() == 1
    assert "VA always returns valid" not in site.pebble.log()
    # The ACME state is on the orderer's volume only; the copies keep PEM files of their own.
    listing = front_container(site, ORDERER).exec_run(["ls", "/data/caddy/certificates/pebble-14000-dir"])
    assert set(site.hostnames) <= set(listing.output.decode().split())
    for node in NODES[1:]:
        copy = front_container(site, node)
        assert copy.exec_run(["ls", "/data/caddy/certificates"]).exit_code != 0, f"{node} holds ACME state"
        copies = copy.exec_run(["ls", "/data/tls-share"]).output.decode().split()
        assert sorted(copies) == sorted(f"{h}.pem" for h in site.hostnames)


def test_pushes_and_pulls_on_every_node_verify_against_the_acme_root(site: AcmeSwarm) -> None:
    every_node_serves(site)
    image = synthetic_image([48 * 1024])
    repository = unique_repository("swacme")
    push_image(site.endpoint(NODES[2], "buildUrl", ADMIN), repository, "1", image)
    cached = unique_repository("swacme-cached")
    seed(site.standin, cached)
    for node in NODES:
        assert pull_image(site.endpoint(node, "buildUrl", ADMIN), repository, "1").blob_digests == [
            b.digest for b in image.blobs]
        pull_image(site.endpoint(node, "cacheUrl"), cached, "1")


def test_a_copy_restarted_while_the_orderer_is_down_serves_its_copy(site: AcmeSwarm) -> None:
    """The orderer's node is lost; a copy's front restarts (its node rebooted, say) and serves at once
    from its volume, without the orderer."""
    before = every_node_serves(site)
    site.bed.stop_engine(ORDERER)
    try:
        copy = front_container(site, VALIDATOR)
        old_id = copy.id
        copy.kill()
        started = time.monotonic()

        def restarted_and_serving() -> None:
            assert front_container(site, VALIDATOR).id != old_id, "swarm has not restarted the task yet"
            for hostname in site.hostnames:
                assert site.served(VALIDATOR, hostname).serial_number == before[(VALIDATOR, hostname)]

        wait_until(restarted_and_serving, 120, f"{VALIDATOR}'s front restarted and serving its copies")
        print(f"\n{VALIDATOR}'s front restarted and served its copies {time.monotonic() - started:.0f} s "
              f"after it was killed, {ORDERER} down")
    finally:
        site.bed.start_engine(ORDERER)
