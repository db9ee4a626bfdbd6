"""The stage stack (Let's Encrypt staging mode) against a real ACME server: Pebble.

The stage stack file is realized as it is, except that its ACME directory points at
Pebble on the stack's network and the front trusts Pebble's API certificate
(acmeDirectoryUrl, acmeTrustedRootPem), which is exactly how a user points a stack at a
private ACME CA. Pebble validates every HTTP-01 challenge for real, against the front's
port 80, reached through the front's network aliases (the public hostnames).

One Pebble serves the whole module: its roots and its orders live in memory and change
when it restarts, and the restart/replace tests compare against what it issued first.

Every HTTPS check verifies against Pebble's issuing root only. The Docker engine treats
registries on 127.0.0.0/8 as insecure (it would accept any certificate), so `docker
push`/`pull` alone prove nothing about TLS: Python's ssl checks each hostname as well.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from cryptography import x509

from testbed.clients import (
    DockerCli,
    digest_in,
    free_port,
    https,
    plain_http_answer,
    pull_and_forget,
    push_unique_image,
)
from testbed.pebble import Pebble, make_pebble_api_certificate, pebble_directory_url, start_pebble
from testbed.stack import RealizedStack, realized_stack, update_stack
from testbed.trust import trust_ca_for, wait_for_served_certificate
from testbed.upstreams import StandinUpstream

STACK = "acme"  # not "e2e-...": the skeleton (stack "e2e") removes leftovers by name prefix
STACK_FILE = "Pulumi.stage.yaml"


@dataclass
class AcmeStack:
    stack: RealizedStack
    upstream: StandinUpstream
    pebble: Pebble
    http_port: int
    root_pem: str  # Pebble's issuing root
    root_file: Path
    first_serials: dict[str, int]  # hostname -> serial of the first certificate the front got
    first_orders: int
    first_accounts: int

    @property
    def hostnames(self) -> list[str]:
        return list(self.stack.outputs["hostnames"])

    def serials_now(self) -> dict[str, int]:
        return {
            name: wait_for_served_certificate(self.stack.https_port, name, self.root_pem).serial_number
            for name in self.hostnames
        }


@pytest.fixture(scope="module")
def acme(docker_client: docker.DockerClient, local_images: dict[str, str]) -> Iterator[AcmeStack]:
    api = make_pebble_api_certificate()
    pebbles: list[Pebble] = []
    http_port = free_port()

    def start_acme_server(network: str) -> None:
        pebbles.append(start_pebble(docker_client, network, f"registry-stack-{STACK}-pebble", api))

    overrides = {
        "acmeDirectoryUrl": pebble_directory_url(),
        "acmeTrustedRootPem": api.ca_pem,
        "httpPort": http_port,
    }
    with realized_stack(
        docker_client, stack=STACK, stack_file=STACK_FILE, overrides=overrides, network_starters=[start_acme_server]
    ) as (stack, upstream):
        assert upstream is not None
        pebble = pebbles[0]
        root_pem = pebble.issuing_root_pem()
        root_dir = Path(tempfile.mkdtemp(prefix="registry-stack-e2e-pebble-root-"))
        root_file = root_dir / "root.pem"
        root_file.write_text(root_pem)
        stack.extra_cleanups.append(lambda: shutil.rmtree(root_dir, ignore_errors=True))
        # What a user of the staging mode does: trust the (untrusted by design) root per registry.
        hostnames = list(stack.outputs["hostnames"])
        folders = trust_ca_for([f"{name}:{stack.https_port}" for name in hostnames], root_pem)
        stack.extra_cleanups.append(lambda: [shutil.rmtree(folder, ignore_errors=True) for folder in folders])
        first_serials = {
            name: wait_for_served_certificate(stack.https_port, name, root_pem).serial_number for name in hostnames
        }
        yield AcmeStack(
            stack=stack, upstream=upstream, pebble=pebble, http_port=http_port, root_pem=root_pem,
            root_file=root_file, first_serials=first_serials, first_orders=pebble.orders_placed(),
            first_accounts=pebble.accounts_registered(),
        )


def _unique(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}"


def test_the_stage_stack_runs_acme_mode_without_a_private_ca(acme: AcmeStack) -> None:
    outputs = acme.stack.outputs
    assert acme.stack.values["tlsMode"] == "letsencrypt-staging"
    assert outputs["caCertPem"] is None
    assert outputs["hostnames"] == ["docker-build.stage.internal.network", "docker-cache.stage.internal.network"]
    front = acme.stack.container("front")
    ports = front.attrs["HostConfig"]["PortBindings"]
    assert ports["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(acme.http_port)}]
    # The account (under the stack file's acmeEmail) and the certificates are on the data volume.
    storage = "/data/caddy/acme/pebble-14000-dir/users /data/caddy/certificates/pebble-14000-dir"
    listing = front.exec_run(["sh", "-c", f"ls {storage}"]).output.decode()
    assert acme.stack.values["acmeEmail"] in listing.split()
    assert set(acme.hostnames) <= set(listing.split())
    (mount,) = [m for m in front.attrs["Mounts"] if m["Destination"] == "/data"]
    assert mount["Type"] == "volume" and mount["Name"] == f"registry-stack-{STACK}-front-data"


def test_pebble_issued_one_certificate_per_hostname_after_real_http01_validation(acme: AcmeStack) -> None:
    for name in acme.hostnames:
        certificate = wait_for_served_certificate(acme.stack.https_port, name, acme.root_pem)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [name]
        assert "Pebble Intermediate CA" in certificate.issuer.rfc4514_string()
    issued = {int(serial, 16) for serial in acme.pebble.issued_serials()}
    assert issued == set(acme.first_serials.values())
    assert acme.first_orders == len(acme.hostnames)
    log = acme.pebble.log()
    assert "VA always returns valid" not in log  # what Pebble logs under PEBBLE_VA_ALWAYS_VALID
    for name in acme.hostnames:
        assert f"Attempting to validate w/ HTTP: http://{name}:80/.well-known/acme-challenge/" in log


def test_push_and_pull_over_the_acme_certificate(acme: AcmeStack, docker_cli: DockerCli) -> None:
    stack = acme.stack
    assert https(stack.url("build", "/v2/"), acme.root_file, auth=("admin", stack.password)).status == 200
    assert https(stack.url("cache", "/v2/"), acme.root_file).status == 200

    tag = f"{stack.address('build')}/{_unique('team/app')}:1.0"
    docker_cli.login(stack.address("build"), "admin", stack.password)
    digest = digest_in(push_unique_image(docker_cli, tag).stdout)
    assert digest in pull_and_forget(docker_cli, tag).stdout

    repository = f"library/{_unique('standin')}"
    push_unique_image(docker_cli, f"{acme.upstream.local_address}/{repository}:1")
    assert "Downloaded newer image" in pull_and_forget(docker_cli, f"{stack.address('cache')}/{repository}:1").stdout


def test_plain_http_redirects_to_https_on_the_published_port(acme: AcmeStack) -> None:
    for name in acme.hostnames:
        status, location = plain_http_answer(name, acme.http_port, "/v2/_catalog?n=1")
        assert status == 308
        assert location == f"https://{name}:{acme.stack.https_port}/v2/_catalog?n=1"


def _assert_the_front_reused_its_stored_certificates(acme: AcmeStack, event: str) -> None:
    serials = acme.serials_now()
    orders, accounts = acme.pebble.orders_placed(), acme.pebble.accounts_registered()
    # Shown with `pytest -s`: the measurement behind the claim.
    print(
        f"\n{event}: serials {_hex(serials)} (first {_hex(acme.first_serials)}), "
        f"orders at Pebble {orders} (first {acme.first_orders}), accounts {accounts} (first {acme.first_accounts})"
    )
    assert serials == acme.first_serials
    assert orders == acme.first_orders
    assert accounts == acme.first_accounts


def _hex(serials: dict[str, int]) -> dict[str, str]:
    return {name.split(".")[0]: f"{serial:x}" for name, serial in serials.items()}


def test_restarting_the_front_places_no_new_order(acme: AcmeStack) -> None:
    acme.stack.container("front").restart(timeout=10)
    _assert_the_front_reused_its_stored_certificates(acme, "after a restart")


def test_replacing_the_front_on_the_same_volume_places_no_new_order(
    acme: AcmeStack, docker_client: docker.DockerClient
) -> None:
    old_front_id = acme.stack.container("front").id
    # What `pulumi up` does when the front's config changes: delete it, create it again on
    # the same data volume (every container here, the network and Pebble stay).
    update_stack(docker_client, acme.stack, {})
    assert acme.stack.container("front").id != old_front_id
    _assert_the_front_reused_its_stored_certificates(acme, "after a replacement")
