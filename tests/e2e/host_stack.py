"""The stack realized for the host bed, and DaemonMirror's commands run over real SSH.

One stack serves every host of the bed (tests/e2e/hosts.py):

- it joins a network the fixture makes first (the `network` key), so the hosts' addresses
  and the network's gateway are known before the program is declared: `mirrorHosts` names
  each host by its address, and the front publishes its port on the gateway
  (`bindAddress`), where the hosts reach it as other machines on a site reach the
  registry host. `etcHosts=<the host's own address>,<gateway>` is how each host learns the
  registry names, as a site without DNS would do it, with a first address that refuses
  (nothing listens on the host's own address): every pull below also proves that the
  clients fall through to the next address of the name, as a swarm's site hosts do when
  their own node's front is down (README "More than one host");
- its upstreams are stand-ins under the real names: `registry-1.docker.io` (Docker Hub)
  and `ghcr.io`, network aliases only the stack's containers resolve. On the hosts those
  names lead nowhere (boot.sh), so a pull there succeeds only through the cache.

The realizer records each DaemonMirror `remote.Command` (create, delete, stdin,
connection) instead of running it; `run_like_remote_command` then runs it as
pulumi-command does (provider/pkg/provider/remote/command.go: one SSH session,
`session.Stdin` = the stdin property, `session.Run(create)`, no pty, no environment),
here with the OpenSSH client: key auth, the host key pinned.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import docker
import pytest

from testbed import E2E_STACK_LABEL, images
from testbed.clients import free_port, make_unique_image, remove_local_image, wait_for_http
from testbed.realize import RealizingMocks
from testbed.stack import e2e_values, remove_leftovers, secret_keys_of
from tests.e2e import hosts as host_bed_module
from tests.e2e.hosts import Host, HostBed, HostSpec
from tests.harness import declare, unwrap

REMOTE_COMMAND = "command:remote:Command"
STANDIN_PORT = 80  # the stand-ins answer on plain http://<real name>/ (no port in the name)
HUB_ALIAS = "registry-1.docker.io"
GHCR_ALIAS = "ghcr.io"

DOCKER28_GRAPH = HostSpec("docker28", host_bed_module.SID, "dockerd")
DOCKER28_CONTAINERD = HostSpec(
    "docker28-containerd", host_bed_module.SID, "dockerd", daemon_json={"features": {"containerd-snapshotter": True}}
)
DOCKER26 = HostSpec("docker26", host_bed_module.TRIXIE, "dockerd")
CONTAINERD2 = HostSpec("containerd2", host_bed_module.SID, "containerd")
PODMAN5 = HostSpec("podman5", host_bed_module.SID, "none")
ALL_HOSTS = (DOCKER28_GRAPH, DOCKER28_CONTAINERD, DOCKER26, CONTAINERD2, PODMAN5)
# How each host is listed in mirrorHosts (after ssh://<user>@<address>): one logs in as a
# sudoer, the others as root.
LOGIN = {"docker26": "deploy"}
FLAGS = {
    "docker26": "sudo=true",
    "containerd2": "docker=false&containerd=true",
    "podman5": "docker=false&podman=true",
}


class RemoteCommandRecorder(RealizingMocks):
    """Realizes the stack for real and keeps each remote Command to run later, over SSH."""

    def __init__(self, client: docker.DockerClient) -> None:
        super().__init__(client)
        self.commands: list[dict[str, Any]] = []

    def new_resource(self, args: Any) -> tuple[str, dict]:
        if args.typ != REMOTE_COMMAND:
            return super().new_resource(args)
        props = unwrap(args.inputs)
        try:
            unknown = sorted(set(props) - {"connection", "create", "delete", "stdin", "triggers"})
            unknown += sorted(f"connection.{k}" for k in set(props["connection"]) - CONNECTION_KEYS)
            if unknown:
                raise AssertionError(f"{REMOTE_COMMAND}: the host tests do not handle {unknown}")
        except BaseException as error:
            self.errors.append(error)
            raise
        self.commands.append({"name": args.name, **props})
        return f"{args.name}-id", {**props, "stdout": "", "stderr": ""}


# pulumi-command's Connection fields this runner honours (connection.go). The SDK fills in
# dialErrorLimit (10) and perDialTimeout (15 s): dial attempts, and the timeout of each.
CONNECTION_KEYS = {"host", "port", "user", "privateKey", "hostKey", "dialErrorLimit", "perDialTimeout"}


def run_like_remote_command(
    connection: dict[str, Any], command: str, stdin: str, pinned_host_key: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    """One SSH session that runs `command` with `stdin`, as remote.Command's create/delete.

    The host key must be `pinned_host_key` (StrictHostKeyChecking, only that key's
    algorithm offered, like ssh.FixedHostKey); when the connection carries its own
    `hostKey`, that is the one the runner pins, and it must be the host's.
    """
    host_key = connection.get("hostKey") or pinned_host_key
    with tempfile.TemporaryDirectory(prefix="registry-stack-e2e-ssh-") as folder:
        key_file = Path(folder) / "id"
        key_file.write_text(connection["privateKey"])
        key_file.chmod(0o600)
        known_hosts = Path(folder) / "known_hosts"
        port = int(connection.get("port") or 22)
        name = connection["host"] if port == 22 else f"[{connection['host']}]:{port}"
        known_hosts.write_text(f"{name} {host_key}\n")
        ssh = [
            "ssh", "-F", "/dev/null", "-T",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", f"IdentityFile={key_file}",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", f"HostKeyAlgorithms={host_key.split()[0]}",
            "-o", f"ConnectTimeout={int(connection.get('perDialTimeout') or 15)}",
            "-p", str(port), f"{connection.get('user') or 'root'}@{connection['host']}",
            command,  # one argument: sshd hands it to the login shell as one string, like session.Run
        ]
        attempts = max(1, int(connection.get("dialErrorLimit") or 10))
        for attempt in range(1, attempts + 1):
            result = subprocess.run(ssh, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
            # Only a failed dial is retried (connection.go's Dial); a command's failure is final.
            if not (result.returncode == 255 and _dial_failed(result.stderr)) or attempt == attempts:
                return result
            time.sleep(1)
        raise AssertionError("unreachable")


def _dial_failed(stderr: str) -> bool:
    return any(text in stderr for text in ("Connection refused", "Connection timed out", "No route to host"))


@dataclass
class Standin:
    """A plain registry on the stack's network under a real registry's name."""

    alias: str
    container: str
    seed_port: int

    @property
    def seed_address(self) -> str:
        return f"127.0.0.1:{self.seed_port}"


def start_named_standin(client: docker.DockerClient, network: str, stack: str, alias: str) -> Standin:
    name = f"registry-stack-{stack}-standin-{alias.split('.')[0]}"
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True)
    port = free_port()
    config = {
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": "/var/lib/registry"}, "delete": {"enabled": True}},
        "http": {"addr": f":{STANDIN_PORT}"},
    }
    container = client.containers.create(
        images.REGISTRY.tag, name=name, network=network, networking_config={network: {"Aliases": [alias]}},
        ports={f"{STANDIN_PORT}/tcp": ("127.0.0.1", port)}, labels={E2E_STACK_LABEL: stack}, detach=True,
    )
    data = json.dumps(config).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("etc/docker/registry/config.yml")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    container.put_archive("/", buffer.getvalue())
    container.start()
    wait_for_http(f"http://127.0.0.1:{port}/v2/")
    return Standin(alias=alias, container=name, seed_port=port)


@dataclass
class HostStack:
    """The realized stack, the booted hosts and each host's recorded DaemonMirror command."""

    client: docker.DockerClient
    stack: str
    bed: HostBed
    outputs: dict[str, Any]
    ca_pem: str
    gateway: str
    https_port: int
    hub: Standin
    ghcr: Standin
    commands: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def host(self, name: str) -> Host:
        return self.bed.hosts[name]

    def run(self, host_name: str, action: str) -> subprocess.CompletedProcess:
        """The host's DaemonMirror create (apply) or delete (remove), over SSH."""
        recorded = self.commands[host_name]
        host = self.host(host_name)
        return run_like_remote_command(
            recorded["connection"], recorded["create" if action == "apply" else "delete"], recorded["stdin"],
            pinned_host_key=host.host_key,
        )

    def cache_log(self, role: str) -> str:
        return self.client.containers.get(f"registry-stack-{self.stack}-{role}").logs().decode(errors="replace")

    def cache_address(self, upstream: str) -> str:
        return f"{upstream}-cache.{self.outputs['hostnames'][0].split('.', 1)[1]}:{self.https_port}"


def mirror_host_entry(host: Host, gateway: str) -> str:
    """`ssh://user@<address>?hostKey=...&etcHosts=<address>,<gateway>&...`: the host key pinned, as users must."""
    flags = [f"hostKey={quote(host.host_key)}", f"etcHosts={host.address},{gateway}"]
    if host.name in FLAGS:
        flags += FLAGS[host.name].split("&")
    return f"ssh://{LOGIN.get(host.name, 'root')}@{host.address}?{'&'.join(flags)}"


def _command_host(command: dict[str, Any], bed: HostBed) -> str:
    address = command["connection"]["host"]
    return next(host.name for host in bed.hosts.values() if host.address == address)


@dataclass
class HostNetwork:
    """The network the hosts and the stack share, with the stand-in upstreams on it."""

    name: str
    gateway: str
    hub: Standin
    ghcr: Standin


@contextlib.contextmanager
def host_network_for(client: docker.DockerClient, stack: str) -> Iterator[HostNetwork]:
    host_bed_module.remove_leftover_hosts(client, {E2E_STACK_LABEL: stack})
    remove_leftovers(client, stack)
    name = f"registry-stack-{stack}"
    network = client.networks.create(name, driver="bridge", labels={E2E_STACK_LABEL: stack})
    try:
        network.reload()
        gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
        hub = start_named_standin(client, name, stack, HUB_ALIAS)
        ghcr = start_named_standin(client, name, stack, GHCR_ALIAS)
        yield HostNetwork(name=name, gateway=gateway, hub=hub, ghcr=ghcr)
    finally:
        remove_leftovers(client, stack)
        with contextlib.suppress(docker.errors.APIError):
            client.networks.get(name).remove()


@contextlib.contextmanager
def booted_hosts(client: docker.DockerClient, stack: str, network: HostNetwork) -> Iterator[HostBed]:
    """Build (or find) the host images and boot every host of ALL_HOSTS on the network."""
    started = time.monotonic()
    host_bed_module.build_host_images()
    built = time.monotonic() - started
    key = host_bed_module.new_ssh_key()
    with host_bed_module.host_bed(
        client, ALL_HOSTS, network.name, f"registry-stack-{stack}-host", key, labels={E2E_STACK_LABEL: stack}
    ) as bed:
        bed.ssh_key = key
        bed.timings = {"images": built, "boot": bed.boot_seconds}
        yield bed


@contextlib.contextmanager
def host_stack(
    client: docker.DockerClient, stack: str, network: HostNetwork, bed: HostBed, https_port: int | None = None
) -> Iterator[HostStack]:
    """Realize the stack with every host of the bed in mirrorHosts; tear it down afterwards."""
    https_port = https_port or free_port()
    values = e2e_values("Pulumi.dev.yaml", {
        "domain": f"{stack}.internal.network",
        "network": network.name,
        "bindAddress": network.gateway,
        "hostAddress": network.gateway,
        "httpsPort": https_port,
        "users": [f"admin:{secrets.token_urlsafe(18)}"],
        "upstreams": [f"docker=http://{HUB_ALIAS}", f"ghcr=http://{GHCR_ALIAS}"],
        "mirrorHosts": [mirror_host_entry(host, network.gateway) for host in bed.hosts.values()],
        "mirrorSshPrivateKey": bed.ssh_key.private_openssh,
    })
    started = time.monotonic()
    mocks = RemoteCommandRecorder(client)
    try:
        declaration = declare(values, secret_keys=secret_keys_of(values), stack=stack, mocks=mocks)
        if mocks.errors:
            raise mocks.errors[0]
        outputs = {k: unwrap(v) for k, v in declaration.outputs.items()}
        result = HostStack(
            client=client, stack=stack, bed=bed, outputs=outputs, ca_pem=outputs.get("caCertPem") or "",
            gateway=network.gateway, https_port=https_port, hub=network.hub, ghcr=network.ghcr,
            timings={**bed.timings, "realize": time.monotonic() - started},
        )
        result.commands = {_command_host(command, bed): command for command in mocks.commands}
        yield result
    finally:
        mocks.realized.teardown()


def unique_repository(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def seed(standin: Standin, repository: str, tag: str = "1") -> None:
    """Push a tiny image nobody else has to a stand-in (through its 127.0.0.1 port), forget it."""
    reference = f"{standin.seed_address}/{repository}:{tag}"
    make_unique_image(reference, layers=2)
    try:
        subprocess.run(["docker", "push", reference], check=True, capture_output=True, timeout=120)
    finally:
        remove_local_image(reference)


def manifest_requested(log: str, repository: str, tag: str = "1") -> bool:
    """The registry's access log names a manifest request for repository:tag."""
    return re.search(rf"/v2/{re.escape(repository)}/manifests/{re.escape(tag)}\b", log) is not None


def environment_stack() -> str:
    """E2E_STACK isolates runs that share the engine; the host bed adds its own suffix."""
    return f"{os.environ.get('E2E_STACK', 'e2e')}-hosts"


# -- fixtures (imported by tests/e2e/conftest.py): one bed and one stack per run ------------


@pytest.fixture(scope="session")
def host_network(docker_client: docker.DockerClient, local_images: dict[str, str]) -> Iterator[HostNetwork]:
    with host_network_for(docker_client, environment_stack()) as network:
        yield network


@pytest.fixture(scope="session")
def host_machines(docker_client: docker.DockerClient, host_network: HostNetwork) -> Iterator[HostBed]:
    with booted_hosts(docker_client, environment_stack(), host_network) as bed:
        yield bed


@pytest.fixture(scope="session")
def hosts_stack(
    docker_client: docker.DockerClient, host_network: HostNetwork, host_machines: HostBed
) -> Iterator[HostStack]:
    with host_stack(docker_client, environment_stack(), host_network, host_machines) as realized:
        yield realized
