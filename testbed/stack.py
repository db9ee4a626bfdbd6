"""A stack the program declares and the realizer creates on the engine: realize, update, tear down."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import yaml

from testbed import E2E_STACK_LABEL, images
from testbed.clients import free_port
from testbed.hosts_file import add_hosts_entry, remove_hosts_entries
from testbed.realize import Realized, RealizingMocks
from testbed.trust import trust_ca_for
from testbed.upstreams import StandinUpstream, start_standin_upstream
from tests.harness import ROOT, Declaration, declare, unwrap


def stack_file_config(stack_file: str) -> dict[str, Any]:
    """The project keys of a Pulumi.<stack>.yaml, without the namespace."""
    data = yaml.safe_load((ROOT / stack_file).read_text()) or {}
    return {k.split(":", 1)[1]: v for k, v in (data.get("config") or {}).items() if k.startswith("registry-stack:")}




def _belongs_to(labels: dict[str, str] | None, name: str, stack: str) -> bool:
    """Ours by label; unlabelled helpers by name. A prefix alone is ambiguous: the stack
    `e2e` is a prefix of `e2e-faults`, so a labelled object of another stack is not ours."""
    labels = labels or {}
    owner = labels.get("registry-stack.stack") or labels.get(E2E_STACK_LABEL)
    if owner is not None:
        return owner == stack
    return name.startswith(f"registry-stack-{stack}-")


def remove_leftovers(client: docker.DockerClient, stack: str) -> None:
    """Remove what an earlier, interrupted run of the same e2e stack left behind."""
    prefix = f"registry-stack-{stack}"
    for container in client.containers.list(all=True, filters={"name": prefix}):
        if _belongs_to(container.labels, container.name, stack):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
    for volume in client.volumes.list(filters={"name": prefix}):
        if _belongs_to(volume.attrs.get("Labels"), volume.name, stack):
            with contextlib.suppress(docker.errors.APIError):
                volume.remove(force=True)
    for network in client.networks.list(names=[prefix]):
        if network.name == prefix:
            network.remove()


@dataclass
class RealizedStack:
    """A stack the program declared and the realizer created on the engine."""

    stack: str
    values: dict[str, Any]
    declaration: Declaration
    realized: Realized
    password: str
    ca_pem: str
    https_port: int
    ca_file: Path
    extra_cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def outputs(self) -> dict[str, Any]:
        return {k: unwrap(v) for k, v in self.declaration.outputs.items()}

    def address(self, role: str) -> str:
        return f"docker-{role}.{self.values['domain']}:{self.https_port}"

    def url(self, role: str, path: str) -> str:
        return f"https://{self.address(role)}{path}"

    def container(self, role: str) -> Any:
        return self.realized.client.containers.get(f"registry-stack-{self.stack}-{role}")


def realize(
    client: docker.DockerClient,
    values: dict[str, Any],
    secret_keys: tuple[str, ...],
    stack: str,
    on_network: Callable[[str], None] | None = None,
) -> tuple[Declaration, Realized]:
    """Run the program with mocks that create every declared resource for real."""
    mocks = RealizingMocks(client, on_network=on_network)
    try:
        declaration = declare(values, secret_keys=secret_keys, stack=stack, mocks=mocks)
    except BaseException:
        mocks.realized.teardown()
        if mocks.errors:
            raise mocks.errors[0] from None
        raise
    if mocks.errors:
        mocks.realized.teardown()
        raise mocks.errors[0]
    return declaration, mocks.realized


def secret_keys_of(values: dict[str, Any]) -> tuple[str, ...]:
    """The keys a user would have set with --secret."""
    return tuple(k for k in ("users", "upstreamCredentials", "mirrorSshPrivateKey", "buildStorageCredentials")
                 if k in values)


def update_stack(client: docker.DockerClient, stack: RealizedStack, overrides: dict[str, Any]) -> None:
    """Play a `pulumi up` with changed config over a realized stack.

    The network and volumes stay; every container is replaced (deleted, then created from
    the new config), as pulumi-docker does with delete_before_replace. `stack` is updated in
    place; its original teardown still removes everything by name.
    """
    values = {**stack.values, **overrides}
    mocks = RealizingMocks(client, update=True)
    declaration = declare(values, secret_keys=secret_keys_of(values), stack=stack.stack, mocks=mocks)
    if mocks.errors:
        raise mocks.errors[0]
    stack.values = values
    stack.declaration = declaration
    stack.realized.containers.update(mocks.realized.containers)


def e2e_values(stack_file: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """A stack file's config with the e2e engine's images, ports and stand-ins."""
    tags = {image.tag.split("/")[1].split(":")[0]: image.tag for image in (*images.ALL_IMAGES, *images.ROOTFS_IMAGES)}
    values = stack_file_config(stack_file)
    values.update({
        "registryImage": tags["registry"],
        "frontImage": tags["caddy"],
        "agentImage": tags["python"],
        "herdImage": tags["varnish"],
        "bindAddress": "127.0.0.1",
    })
    values.update(overrides)
    return values


@contextlib.contextmanager
def realized_stack(
    client: docker.DockerClient,
    stack: str,
    stack_file: str = "Pulumi.dev.yaml",
    overrides: dict[str, Any] | None = None,
    upstream_alias: str = "upstream",
    network_starters: Sequence[Callable[[str], None]] = (),
) -> Iterator[tuple[RealizedStack, StandinUpstream | None]]:
    """Realize a stack with a stand-in upstream on its network; tear all down afterwards.

    `network_starters` start more servers on the stack's network (an ACME server, say),
    each called with the network's name right after the stand-in upstream, before any
    container of the stack starts. Name their containers `registry-stack-<stack>-...` so
    the teardown (`remove_leftovers`) removes them, also when realizing fails.
    """
    remove_leftovers(client, stack)
    password = secrets.token_urlsafe(18)
    https_port = free_port()
    upstream_box: list[StandinUpstream] = []

    def start_upstream(network: str) -> None:
        upstream_box.append(
            start_standin_upstream(client, network, f"registry-stack-{stack}-upstream", upstream_alias, stack=stack)
        )
        for starter in network_starters:
            starter(network)

    values = e2e_values(stack_file, {
        "httpsPort": https_port,
        "users": [f"admin:{password}"],
        "upstreams": [f"docker=http://{upstream_alias}:5000"],
        **(overrides or {}),
    })
    cleanups: list[Callable[[], None]] = []
    try:
        declaration, realized = realize(client, values, secret_keys_of(values), stack, on_network=start_upstream)
        cleanups.append(realized.teardown)
        outputs = {k: unwrap(v) for k, v in declaration.outputs.items()}
        ca_pem = outputs.get("caCertPem") or ""
        ca_dir = Path(tempfile.mkdtemp(prefix="registry-stack-e2e-ca-"))
        ca_file = ca_dir / "ca.pem"
        ca_file.write_text(ca_pem)
        cleanups.append(lambda: shutil.rmtree(ca_dir, ignore_errors=True))
        hostnames = list(outputs["hostnames"])
        add_hosts_entry(hostnames, stack)
        cleanups.append(lambda: remove_hosts_entries(stack))
        folders = trust_ca_for([f"{name}:{https_port}" for name in hostnames], ca_pem) if ca_pem else []
        cleanups.append(lambda: [shutil.rmtree(folder, ignore_errors=True) for folder in folders])
        result = RealizedStack(
            stack=stack, values=values, declaration=declaration, realized=realized, password=password,
            ca_pem=ca_pem, https_port=https_port, ca_file=ca_file, extra_cleanups=cleanups,
        )
        yield result, (upstream_box[0] if upstream_box else None)
    finally:
        for upstream in upstream_box:
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(upstream.name).remove(force=True)
        for cleanup in reversed(cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        remove_leftovers(client, stack)
