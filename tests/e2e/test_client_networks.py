"""cacheClientNetworks: anonymous cache reads from allowed networks only.

The front matches the TCP peer address it sees, so the test first pins down what that
address is for each kind of client, then checks allow and deny from each vantage point:

- the host itself, through the port published on 127.0.0.1: Docker's userland proxy
  (docker-proxy) opens the connection to the container, so the front sees the stack
  network's *gateway*, never 127.0.0.1 (shown from a registry's own request log);
- a container on a network the front is attached to: its own address on that network.

Layout, all made by this module: the stack joins a network the test creates first
(`network` key), so its gateway and the "allowed" network's subnet are known when the
stack is declared:

    cacheClientNetworks = [<stack network gateway>/32, <allowed network subnet>]

Clients are `sleep` containers on the stack network, the allowed network and a denied
network (the front is connected to the last two); requests run in their network namespace
with nsenter and the host's python3 (tests/e2e/netns_request.py), TLS verified against the
stack's CA.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from testbed import images
from testbed.clients import https, wait_until
from testbed.registry_http import MANIFEST_V2, Endpoint, SyntheticImage, push_image, synthetic_image
from testbed.stack import RealizedStack, realized_stack
from testbed.upstreams import StandinUpstream, start_standin_upstream

# Not "e2e-...": the skeleton's leftover cleanup removes every "registry-stack-e2e*" name.
STACK = f"clientnets-{os.environ.get('E2E_STACK', 'e2e')}"
# Helpers the test starts before the stack exist under their own prefix: realizing the
# stack first removes every "registry-stack-<stack>*" container as a leftover.
AUX = STACK
NETNS_REQUEST = Path(__file__).with_name("netns_request.py")
REPOSITORY = "library/netlimit"
API_HEADER = "docker-distribution-api-version"
PEER_IN_LOG = re.compile(r'^([0-9.]+) - |http\.request\.remoteaddr="?([0-9.]+):\d+')


@dataclass
class Client:
    """A container that only sleeps; requests run in its network namespace."""

    container: Any
    network: str

    @property
    def address(self) -> str:
        self.container.reload()
        return self.container.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"]


@dataclass
class Layout:
    stack: RealizedStack
    upstream: StandinUpstream
    image: SyntheticImage
    gateway: str  # of the stack's network: what host clients look like to the front
    front_addresses: dict[str, str]  # network -> the front's address there
    clients: dict[str, Client]  # "stack", "allowed", "denied"


def _network_config(network: Any) -> dict[str, str]:
    network.reload()
    return network.attrs["IPAM"]["Config"][0]


def _remove_aux(client: docker.DockerClient, networks: list[str]) -> None:
    for container in client.containers.list(all=True, filters={"label": f"registry-stack.e2e-aux={AUX}"}):
        container.remove(force=True)
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(f"{AUX}-upstream").remove(force=True)
    for name in networks:
        for network in client.networks.list(names=[name]):
            if network.name == name:
                network.remove()


def _start_client(client: docker.DockerClient, network: str, role: str) -> Client:
    container = client.containers.run(
        images.REGISTRY.tag, entrypoint=["sleep", "600"], name=f"{AUX}-client-{role}", network=network,
        labels={"registry-stack.e2e-aux": AUX}, detach=True,
    )
    return Client(container, network)


def _front_address(front: Any, network: str) -> str:
    front.reload()
    return front.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


@pytest.fixture(scope="module")
def layout(docker_client: docker.DockerClient, local_images: dict[str, str]) -> Iterator[Layout]:
    names = {role: f"{AUX}-{role}" for role in ("stack-net", "allowed-net", "denied-net")}
    _remove_aux(docker_client, list(names.values()))
    labels = {"registry-stack.e2e-aux": AUX}
    networks = {role: docker_client.networks.create(name, driver="bridge", labels=labels)
                for role, name in names.items()}
    try:
        gateway = _network_config(networks["stack-net"])["Gateway"]
        allowed_subnet = _network_config(networks["allowed-net"])["Subnet"]
        upstream = start_standin_upstream(docker_client, names["stack-net"], f"{AUX}-upstream", "upstream")
        overrides = {"network": names["stack-net"], "cacheClientNetworks": [f"{gateway}/32", allowed_subnet]}
        with realized_stack(docker_client, stack=STACK, overrides=overrides) as (stack, _):
            front = stack.container("front")
            for role in ("allowed-net", "denied-net"):
                networks[role].connect(front)
            clients = {
                role.removesuffix("-net"): _start_client(docker_client, name, role) for role, name in names.items()
            }
            image = synthetic_image([64 * 1024, 256 * 1024])
            push_image(Endpoint(f"http://{upstream.local_address}"), REPOSITORY, "1", image)
            yield Layout(
                stack=stack, upstream=upstream, image=image, gateway=gateway,
                front_addresses={name: _front_address(front, name) for name in names.values()},
                clients=clients,
            )
    finally:
        with contextlib.suppress(docker.errors.APIError):
            _remove_aux(docker_client, list(names.values()))


# -- requests from a client's network namespace --------------------------------------------


def _from_client(layout: Layout, role: str, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    client = layout.clients[role]
    client.container.reload()
    pid = client.container.attrs["State"]["Pid"]
    server_name = layout.stack.address("cache").rsplit(":", 1)[0]
    spec = {
        "address": layout.front_addresses[client.network], "port": 443, "server_name": server_name,
        "ca_pem": layout.stack.ca_pem, "requests": requests,
    }
    result = subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, str(NETNS_REQUEST)],
        input=json.dumps(spec), capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _reads(layout: Layout) -> list[dict[str, Any]]:
    """An anonymous pull's requests: the API check, the manifest and a blob."""
    return [
        {"path": "/v2/"},
        {"path": f"/v2/{REPOSITORY}/manifests/1", "headers": {"Accept": MANIFEST_V2}},
        {"path": f"/v2/{REPOSITORY}/blobs/{layout.image.config.digest}"},
    ]


def _assert_served(answers: list[dict[str, Any]], layout: Layout) -> None:
    api, manifest, blob = answers
    assert api["status"] == 200, api
    assert manifest["status"] == 200, manifest
    assert manifest["headers"]["docker-content-digest"] == layout.image.manifest_digest
    assert blob["status"] == 200 and blob["body"].encode() == layout.image.config.data


def _assert_denied(answer: dict[str, Any]) -> None:
    assert answer["status"] == 403, answer
    assert answer["headers"][API_HEADER] == "registry/2.0"
    assert answer["headers"]["content-type"].startswith("application/json")
    assert json.loads(answer["body"])["errors"][0]["code"] == "DENIED"


# -- the tests ------------------------------------------------------------------------------


def test_host_clients_reach_containers_from_the_stack_networks_gateway(layout: Layout) -> None:
    """What a container sees for a request to a port published on 127.0.0.1: the gateway."""
    marker = secrets.token_hex(8)
    urllib.request.urlopen(f"http://{layout.upstream.local_address}/v2/?probe={marker}", timeout=10).read()
    container = layout.stack.realized.client.containers.get(layout.upstream.name)

    def lines_with_marker() -> list[str]:
        # The registry writes its log line after the answer: on a loaded machine it can come later.
        log = container.logs().decode(errors="replace")
        lines = [line for line in log.splitlines() if marker in line]
        assert lines, "no log line for the probe yet"
        return lines

    lines = wait_until(lines_with_marker, timeout=10, what="the upstream's log line of the probe")
    # The registry logs each request twice: a combined-format access line and its own line.
    peers = {match[1] or match[2] for line in lines if (match := PEER_IN_LOG.search(line))}
    assert peers == {layout.gateway}, f"expected only the gateway {layout.gateway}: {lines}"


def test_host_client_allowed_by_the_gateway_reads_anonymously(layout: Layout) -> None:
    stack = layout.stack
    manifest = https(
        stack.url("cache", f"/v2/{REPOSITORY}/manifests/1"), stack.ca_file, headers={"Accept": MANIFEST_V2}
    )
    assert manifest.status == 200
    assert manifest.headers["docker-content-digest"] == layout.image.manifest_digest
    blob = https(stack.url("cache", f"/v2/{REPOSITORY}/blobs/{layout.image.layers[0].digest}"), stack.ca_file)
    assert blob.status == 200 and blob.body == layout.image.layers[0].data


def test_container_on_an_allowed_network_reads_anonymously(layout: Layout) -> None:
    _assert_served(_from_client(layout, "allowed", _reads(layout)), layout)


def test_container_on_another_network_is_denied_like_a_registry_would(layout: Layout) -> None:
    for answer in _from_client(layout, "denied", _reads(layout)):
        _assert_denied(answer)


def test_other_addresses_on_the_stack_network_are_denied(layout: Layout) -> None:
    """Only the gateway (/32) is listed: a container on the stack's own network keeps its address."""
    client = layout.clients["stack"]
    assert client.address != layout.gateway
    for answer in _from_client(layout, "stack", _reads(layout)):
        _assert_denied(answer)


def test_a_forwarded_for_header_does_not_open_the_cache(layout: Layout) -> None:
    """The front matches the TCP peer, not what a client claims about itself."""
    allowed_address = layout.clients["allowed"].address
    spoofed = {"path": "/v2/", "headers": {"X-Forwarded-For": allowed_address, "X-Real-IP": allowed_address}}
    _assert_denied(_from_client(layout, "denied", [spoofed])[0])


def test_an_allowed_network_still_cannot_push(layout: Layout) -> None:
    answer = _from_client(layout, "allowed", [{"method": "POST", "path": f"/v2/{REPOSITORY}/blobs/uploads/"}])[0]
    assert answer["status"] == 405, answer
    assert json.loads(answer["body"])["errors"][0]["code"] == "UNSUPPORTED"
