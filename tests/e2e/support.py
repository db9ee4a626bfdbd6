"""Tools the e2e tests share: realize a stack, talk to it like a client would, clean up."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import io
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import yaml

from tests.e2e import images
from tests.e2e.realize import Realized, RealizingMocks
from tests.harness import ROOT, Declaration, declare, unwrap

HOSTS_FILE = Path("/etc/hosts")
CERTS_D = Path("/etc/docker/certs.d")
HOSTS_MARK = "# registry-stack e2e"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_file_config(stack_file: str) -> dict[str, Any]:
    """The project keys of a Pulumi.<stack>.yaml, without the namespace."""
    data = yaml.safe_load((ROOT / stack_file).read_text()) or {}
    return {k.split(":", 1)[1]: v for k, v in (data.get("config") or {}).items() if k.startswith("registry-stack:")}


def remove_leftovers(client: docker.DockerClient, stack: str) -> None:
    """Remove what an earlier, interrupted run of the same e2e stack left behind."""
    prefix = f"registry-stack-{stack}"
    for container in client.containers.list(all=True, filters={"name": prefix}):
        if container.name.startswith(prefix):
            container.remove(force=True)
    for volume in client.volumes.list(filters={"name": prefix}):
        if volume.name.startswith(prefix):
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


# -- host-side trust: names and CA, as a user would set them up -----------------------------


def add_hosts_entry(names: list[str], stack: str, address: str = "127.0.0.1") -> None:
    remove_hosts_entries(stack)
    with HOSTS_FILE.open("a") as hosts:
        hosts.write(f"{address} {' '.join(names)} {HOSTS_MARK} {stack}\n")


def remove_hosts_entries(stack: str) -> None:
    lines = HOSTS_FILE.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.rstrip().endswith(f"{HOSTS_MARK} {stack}")]
    if kept != lines:
        # /etc/hosts may be a bind mount: rewrite in place rather than rename over it.
        HOSTS_FILE.write_text("".join(kept))


def trust_ca_for(addresses: list[str], ca_pem: str) -> list[Path]:
    folders = []
    for address in addresses:
        folder = CERTS_D / address
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ca.crt").write_text(ca_pem)
        folders.append(folder)
    return folders


# -- clients ------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


def https(
    url: str,
    ca_file: Path,
    method: str = "GET",
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
    timeout: float = 30,
) -> Response:
    """One HTTPS request, the certificate verified against the given CA only."""
    context = ssl.create_default_context(cafile=str(ca_file))
    request = urllib.request.Request(url, method=method, data=data, headers=dict(headers or {}))
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout) as answer:
            return Response(answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])


class DockerCli:
    """The docker CLI with its own config folder (credentials), like a user's machine."""

    def __init__(self) -> None:
        self.config_dir = tempfile.mkdtemp(prefix="registry-stack-e2e-docker-")

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        env = {**os.environ, "DOCKER_CONFIG": self.config_dir}
        result = subprocess.run(
            ["docker", *args], input=stdin, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            command = " ".join(args)
            raise AssertionError(f"docker {command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def login(self, address: str, user: str, password: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("login", address, "-u", user, "--password-stdin", stdin=password, check=check)

    def cleanup(self) -> None:
        shutil.rmtree(self.config_dir, ignore_errors=True)


def _blob_chunks(size: int, chunk: int = 4 * 1024 * 1024) -> Iterator[bytes]:
    block = secrets.token_bytes(chunk)
    sent = 0
    while sent < size:
        piece = block[: min(chunk, size - sent)]
        sent += len(piece)
        yield piece


def upload_blob_streaming(
    stack: RealizedStack, repository: str, size: int, auth: tuple[str, str]
) -> tuple[str, int]:
    """Upload one blob of `size` bytes in a single streamed PATCH, as a large layer would go.

    Returns (digest, size the registry reports for the finished upload).
    """
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    host = stack.address("build").rsplit(":", 1)[0]
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}
    connection = http.client.HTTPSConnection(host, stack.https_port, context=context, timeout=600)
    try:
        connection.request("POST", f"/v2/{repository}/blobs/uploads/", headers=headers)
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 202, answer.status
        location = answer.getheader("Location")
        digest = hashlib.sha256()

        def body() -> Iterator[bytes]:
            for piece in _blob_chunks(size):
                digest.update(piece)
                yield piece

        connection.request(
            "PATCH", location, body=body(),
            headers={**headers, "Content-Type": "application/octet-stream"}, encode_chunked=True,
        )
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 202, answer.status
        uploaded = int(answer.getheader("Range").split("-")[1]) + 1
        location = answer.getheader("Location")
        separator = "&" if "?" in location else "?"
        blob_digest = f"sha256:{digest.hexdigest()}"
        connection.request("PUT", f"{location}{separator}digest={blob_digest}", body=b"", headers=headers)
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 201, answer.status
        return blob_digest, uploaded
    finally:
        connection.close()


def make_unique_image(tag: str, layers: int = 1, layer_bytes: int = 4096) -> str:
    """A tiny image nobody else has: its layers must travel through the registry."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for index in range(layers):
            data = secrets.token_bytes(layer_bytes)
            info = tarfile.TarInfo(f"data/blob-{index}.bin")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    subprocess.run(["docker", "import", "-", tag], input=buffer.getvalue(), check=True, capture_output=True)
    return tag


def remove_local_image(*tags: str) -> None:
    subprocess.run(["docker", "image", "rm", "-f", *tags], capture_output=True, check=False)


def wait_for_http(url: str, timeout: float = 30, ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as answer:
                if answer.status in ok:
                    return
        except urllib.error.HTTPError as error:
            if error.code in ok:
                return
            last = error
        except OSError as error:
            last = error
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {timeout}s: {last}")


# -- the stand-in upstream: a plain registry only the cache (and the test) can reach -------


@dataclass
class StandinUpstream:
    name: str
    port: int
    alias: str
    username: str = ""
    password: str = ""

    @property
    def url_for_cache(self) -> str:
        return f"http://{self.alias}:5000"

    @property
    def local_address(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_standin_upstream(client: docker.DockerClient, network: str, name: str, alias: str) -> StandinUpstream:
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True)
    port = free_port()
    config = {
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": "/var/lib/registry"}, "delete": {"enabled": True}},
        "http": {"addr": ":5000"},
    }
    container = client.containers.create(
        images.REGISTRY.tag,
        name=name,
        network=network,
        networking_config={network: {"Aliases": [alias]}},
        ports={"5000/tcp": ("127.0.0.1", port)},
        labels={"registry-stack.e2e": "upstream"},
        detach=True,
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
    return StandinUpstream(name=name, port=port, alias=alias)


def e2e_values(stack_file: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """A stack file's config with the e2e engine's images, ports and stand-ins."""
    tags = {image.tag.split("/")[1].split(":")[0]: image.tag for image in images.ALL_IMAGES}
    values = stack_file_config(stack_file)
    values.update({
        "registryImage": tags["registry"],
        "frontImage": tags["caddy"],
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
) -> Iterator[tuple[RealizedStack, StandinUpstream | None]]:
    """Realize a stack with a stand-in upstream on its network; tear all down afterwards."""
    remove_leftovers(client, stack)
    password = secrets.token_urlsafe(18)
    https_port = free_port()
    upstream_box: list[StandinUpstream] = []

    def start_upstream(network: str) -> None:
        upstream_box.append(
            start_standin_upstream(client, network, f"registry-stack-{stack}-upstream", upstream_alias)
        )

    values = e2e_values(stack_file, {
        "httpsPort": https_port,
        "users": [f"admin:{password}"],
        "upstreamUrl": f"http://{upstream_alias}:5000",
        **(overrides or {}),
    })
    cleanups: list[Callable[[], None]] = []
    try:
        declaration, realized = realize(client, values, ("users",), stack, on_network=start_upstream)
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
