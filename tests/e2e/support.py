"""Tools the e2e tests share: realize a stack, talk to it like a client would, clean up."""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import hashlib
import http.client
import io
import ipaddress
import json
import os
import re
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import docker
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e import images
from tests.e2e.realize import Realized, RealizingMocks
from tests.harness import ROOT, Declaration, declare, unwrap

HOSTS_FILE = Path("/etc/hosts")
CERTS_D = Path("/etc/docker/certs.d")
HOSTS_MARK = "# registry-stack e2e"
HOSTS_LOCK = Path("/tmp/registry-stack-e2e-hosts.lock")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_file_config(stack_file: str) -> dict[str, Any]:
    """The project keys of a Pulumi.<stack>.yaml, without the namespace."""
    data = yaml.safe_load((ROOT / stack_file).read_text()) or {}
    return {k.split(":", 1)[1]: v for k, v in (data.get("config") or {}).items() if k.startswith("registry-stack:")}


E2E_STACK_LABEL = "registry-stack.e2e-stack"


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
    return tuple(k for k in ("users", "upstreamCredentials", "mirrorSshPrivateKey") if k in values)


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


# -- host-side trust: names and CA, as a user would set them up -----------------------------


@contextlib.contextmanager
def _hosts_file_locked() -> Iterator[None]:
    """Several e2e runs may share one machine: their read-modify-writes of /etc/hosts must
    not interleave, or one run drops the line another just added."""
    with HOSTS_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


HOSTS_CACHE_SECONDS = 5.5


def add_hosts_entry(names: list[str], stack: str, address: str = "127.0.0.1") -> None:
    with _hosts_file_locked():
        _drop_hosts_lines(stack)
        with HOSTS_FILE.open("a") as hosts:
            hosts.write(f"{address} {' '.join(names)} {HOSTS_MARK} {stack}\n")
    # dockerd (Go's resolver) re-reads /etc/hosts at most every 5 s: until then a new name
    # does not resolve for `docker pull`.
    time.sleep(HOSTS_CACHE_SECONDS)


def remove_hosts_entries(stack: str) -> None:
    with _hosts_file_locked():
        _drop_hosts_lines(stack)


def _drop_hosts_lines(stack: str) -> None:
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


def digest_in(output: str) -> str:
    """The manifest digest `docker push` or `docker pull` printed."""
    return next(word for word in output.split() if word.startswith("sha256:"))


def push_unique_image(
    cli: DockerCli, tag: str, layers: int = 1, check: bool = True
) -> subprocess.CompletedProcess:
    """Make an image nobody else has under `tag`, push it, and forget it locally."""
    make_unique_image(tag, layers=layers)
    try:
        return cli.run("push", tag, check=check)
    finally:
        remove_local_image(tag)


def pull_and_forget(cli: DockerCli, reference: str) -> subprocess.CompletedProcess:
    """Pull (its layers must travel, nothing is kept locally afterwards)."""
    try:
        return cli.run("pull", reference)
    finally:
        remove_local_image(reference)


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


def start_standin_upstream(
    client: docker.DockerClient, network: str, name: str, alias: str, credentials: tuple[str, str] | None = None,
    stack: str = "",
) -> StandinUpstream:
    """A plain registry on the stack's network; with `credentials`, it demands basic auth."""
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True)
    port = free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": "/var/lib/registry"}, "delete": {"enabled": True}},
        "http": {"addr": ":5000"},
    }
    files = {}
    if credentials:
        config["auth"] = {"htpasswd": {"realm": "standin", "path": "/etc/docker/registry/htpasswd"}}
        hashed = bcrypt.hashpw(credentials[1].encode(), bcrypt.gensalt(rounds=10)).decode()
        files["etc/docker/registry/htpasswd"] = f"{credentials[0]}:{hashed}\n".encode()
    container = client.containers.create(
        images.REGISTRY.tag,
        name=name,
        network=network,
        networking_config={network: {"Aliases": [alias]}},
        ports={"5000/tcp": ("127.0.0.1", port)},
        labels={"registry-stack.e2e": "upstream", **({E2E_STACK_LABEL: stack} if stack else {})},
        detach=True,
    )
    files["etc/docker/registry/config.yml"] = json.dumps(config).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    container.put_archive("/", buffer.getvalue())
    container.start()
    wait_for_http(f"http://127.0.0.1:{port}/v2/", ok=(401,) if credentials else (200,))
    username, password = credentials or ("", "")
    return StandinUpstream(name=name, port=port, alias=alias, username=username, password=password)


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


# -- an ACME server on the stack's network: Pebble, Let's Encrypt's own test CA ------------

PEBBLE_ALIAS = "pebble"
PEBBLE_ACME_PORT = 14000
PEBBLE_MANAGEMENT_PORT = 15000
PEBBLE_CONFIG_DIR = "/etc/pebble"
# Pebble's log lines (pebble 2.4.0) that tell what it did.
PEBBLE_ORDERS_LINE = re.compile(r"There are now (\d+) orders in the db")
PEBBLE_ACCOUNTS_LINE = re.compile(r"There are now (\d+) accounts in memory")
PEBBLE_ISSUED_LINE = re.compile(r"Issued certificate serial (\S+) for order (\S+)")


def pebble_directory_url(alias: str = PEBBLE_ALIAS) -> str:
    """The ACME directory as containers on the stack's network reach it."""
    return f"https://{alias}:{PEBBLE_ACME_PORT}/dir"


@dataclass(frozen=True)
class PebbleApiCertificate:
    """Pebble's own HTTPS certificate (ACME API and management) and the CA that signed it.

    Made before the stack is declared: the front must be told to trust `ca_pem`
    (acmeTrustedRootPem) when it is declared, while Pebble itself can start only once the
    stack's network exists.
    """

    ca_pem: str
    cert_pem: str
    key_pem: str


def make_pebble_api_certificate(alias: str = PEBBLE_ALIAS) -> PebbleApiCertificate:
    """A throwaway CA and a leaf for `alias` (what the front dials) and 127.0.0.1 (the test)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry-stack e2e Pebble API CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(alias), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, alias)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return PebbleApiCertificate(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM).decode(),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )


@dataclass
class Pebble:
    """A running Pebble: the ACME server on the stack's network, its management API on 127.0.0.1."""

    client: docker.DockerClient
    name: str
    management_port: int
    api: PebbleApiCertificate

    def _management(self, path: str) -> str:
        context = ssl.create_default_context(cadata=self.api.ca_pem)
        url = f"https://127.0.0.1:{self.management_port}{path}"
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:
            return answer.read().decode()

    def issuing_root_pem(self) -> str:
        """The root Pebble signs certificates under; a new one on every Pebble start."""
        return self._management("/roots/0")

    def log(self) -> str:
        return self.client.containers.get(self.name).logs().decode(errors="replace")

    def orders_placed(self) -> int:
        """How many orders Pebble has received since it started (it keeps them all in memory)."""
        counts = [int(n) for n in PEBBLE_ORDERS_LINE.findall(self.log())]
        return max(counts, default=0)

    def accounts_registered(self) -> int:
        counts = [int(n) for n in PEBBLE_ACCOUNTS_LINE.findall(self.log())]
        return max(counts, default=0)

    def issued_serials(self) -> list[str]:
        """The serial numbers of the certificates Pebble has issued, as it logs them."""
        return [serial for serial, _order in PEBBLE_ISSUED_LINE.findall(self.log())]


def start_pebble(
    client: docker.DockerClient, network: str, name: str, api: PebbleApiCertificate, alias: str = PEBBLE_ALIAS
) -> Pebble:
    """Start Pebble on `network` under `alias`, validating challenges for real.

    It resolves names through Docker's embedded DNS (127.0.0.11), so the front's network
    aliases (the public hostnames) lead it to the front, and it validates HTTP-01 on port 80
    as Let's Encrypt does. PEBBLE_VA_NOSLEEP only drops Pebble's artificial validation
    delays; PEBBLE_VA_ALWAYS_VALID stays off, so each challenge is really fetched.
    """
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True)
    management_port = free_port()
    config = {
        "pebble": {
            "listenAddress": f"0.0.0.0:{PEBBLE_ACME_PORT}",
            "managementListenAddress": f"0.0.0.0:{PEBBLE_MANAGEMENT_PORT}",
            "certificate": f"{PEBBLE_CONFIG_DIR}/cert.pem",
            "privateKey": f"{PEBBLE_CONFIG_DIR}/key.pem",
            "httpPort": 80,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    container = client.containers.create(
        images.PEBBLE.tag,
        command=["-config", f"{PEBBLE_CONFIG_DIR}/pebble-config.json", "-dnsserver", "127.0.0.11:53"],
        name=name,
        network=network,
        networking_config={network: {"Aliases": [alias]}},
        ports={f"{PEBBLE_MANAGEMENT_PORT}/tcp": ("127.0.0.1", management_port)},
        environment={"PEBBLE_VA_NOSLEEP": "1"},
        labels={"registry-stack.e2e": "acme-server"},
        detach=True,
    )
    _put_files(container, {
        f"{PEBBLE_CONFIG_DIR}/pebble-config.json": json.dumps(config),
        f"{PEBBLE_CONFIG_DIR}/cert.pem": api.cert_pem,
        f"{PEBBLE_CONFIG_DIR}/key.pem": api.key_pem,
    })
    container.start()
    pebble = Pebble(client=client, name=name, management_port=management_port, api=api)
    _wait_until(pebble.issuing_root_pem, timeout=30, what=f"Pebble's management API on 127.0.0.1:{management_port}")
    return pebble


def _put_files(container: Any, files: dict[str, str]) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    container.put_archive("/", buffer.getvalue())


def _wait_until(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """probe()'s first result that does not raise; fails with the last error after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return probe()
        except (OSError, ssl.SSLError, AssertionError) as error:
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what}: not ready after {timeout}s: {error}") from error
        time.sleep(interval)


# -- checking a front's certificates and redirects from the host ----------------------------


def served_certificate(port: int, server_name: str, ca_pem: str, address: str = "127.0.0.1") -> x509.Certificate:
    """The leaf the front serves for `server_name`, its chain verified against `ca_pem` only."""
    context = ssl.create_default_context(cadata=ca_pem)
    with (
        socket.create_connection((address, port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=server_name) as connection,
    ):
        der = connection.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def wait_for_served_certificate(
    port: int, server_name: str, ca_pem: str, timeout: float = 60
) -> x509.Certificate:
    """Wait until the front serves a certificate for `server_name` that `ca_pem` verifies.

    An ACME front answers HTTPS only once its order went through (in the background after
    the container started), so the first handshakes fail.
    """
    return _wait_until(
        lambda: served_certificate(port, server_name, ca_pem), timeout,
        f"a certificate for {server_name} on 127.0.0.1:{port} verified by the given CA",
    )


def plain_http_answer(host: str, port: int, path: str) -> tuple[int, str]:
    """Status and Location of a plain-HTTP GET, without following redirects."""
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        answer.read()
        return answer.status, answer.getheader("Location") or ""
    finally:
        connection.close()


# -- a stand-in for a private upstream: token auth, like ghcr.io, quay.io and Docker Hub ----
#
# distribution's proxy sends its credentials only to a Bearer-token realm (it ignores Basic
# challenges), so a realistic private upstream needs a token server. Here it is a Caddy
# that checks the robot's password and hands out one pre-signed token (RS256, x5c header)
# granting pull on the given repositories. A second, auth-less registry on the same
# storage (published on 127.0.0.1) lets the test seed images without a token flow.

TOKEN_ISSUER = "standin-issuer"
TOKEN_SERVICE = "standin"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_pull_token(repositories: list[str], subject: str) -> tuple[str, str]:
    """(JWT, PEM of the certificate the registry must trust to verify it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TOKEN_ISSUER)])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    chain = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    header = {"typ": "JWT", "alg": "RS256", "x5c": chain}
    issued = int(time.time())
    claims = {
        "iss": TOKEN_ISSUER, "sub": subject, "aud": TOKEN_SERVICE, "exp": issued + 6 * 3600,
        "nbf": issued - 60, "iat": issued - 60, "jti": secrets.token_hex(8),
        "access": [{"type": "repository", "name": name, "actions": ["pull"]} for name in repositories],
    }
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}", cert.public_bytes(serialization.Encoding.PEM).decode()


def _create_with_files(client: docker.DockerClient, image: str, files: dict[str, bytes], **kwargs: Any) -> Any:
    container = client.containers.create(image, detach=True, **kwargs)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, data in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    container.put_archive("/", buffer.getvalue())
    container.start()
    return container


def start_token_auth_upstream(
    client: docker.DockerClient, network: str, stack: str, alias: str,
    credentials: tuple[str, str], repositories: list[str],
) -> StandinUpstream:
    """A private upstream that demands a token for every pull; seeded through 127.0.0.1."""
    prefix = f"registry-stack-{stack}-{alias}"
    owner = {E2E_STACK_LABEL: stack}
    volume = client.volumes.create(f"{prefix}-data", labels=owner)
    token, token_cert = signed_pull_token(repositories, credentials[0])
    hashed = bcrypt.hashpw(credentials[1].encode(), bcrypt.gensalt(rounds=10))
    token_body = json.dumps({"token": token, "access_token": token, "expires_in": 6 * 3600})
    caddy = {
        "apps": {"http": {"servers": {"token": {
            "listen": [":80"],
            "automatic_https": {"disable": True},
            "routes": [{"match": [{"path": ["/token"]}], "handle": [
                {"handler": "authentication", "providers": {"http_basic": {"accounts": [
                    {"username": credentials[0], "password": base64.b64encode(hashed).decode()}
                ], "hash": {"algorithm": "bcrypt"}}}},
                {"handler": "static_response", "status_code": 200, "body": token_body,
                 "headers": {"Content-Type": ["application/json"]}},
            ]}],
        }}}},
    }
    _create_with_files(
        client, images.CADDY.tag, {"/etc/caddy/caddy.json": json.dumps(caddy).encode()},
        name=f"{prefix}-token", labels=owner, network=network,
        networking_config={network: {"Aliases": [f"{alias}-token"]}},
    )
    storage = {"filesystem": {"rootdirectory": "/var/lib/registry"}, "delete": {"enabled": True}}
    protected = {
        "version": 0.1, "storage": storage, "http": {"addr": ":5000"},
        "auth": {"token": {
            "realm": f"http://{alias}-token/token", "service": TOKEN_SERVICE, "issuer": TOKEN_ISSUER,
            "rootcertbundle": "/etc/docker/registry/token.crt",
        }},
    }
    volumes = {volume.name: {"bind": "/var/lib/registry", "mode": "rw"}}
    _create_with_files(
        client, images.REGISTRY.tag,
        {"/etc/docker/registry/config.yml": json.dumps(protected).encode(),
         "/etc/docker/registry/token.crt": token_cert.encode()},
        name=prefix, labels=owner, network=network, networking_config={network: {"Aliases": [alias]}}, volumes=volumes,
    )
    seed_port = free_port()
    seed = {"version": 0.1, "storage": storage, "http": {"addr": ":5000"}}
    _create_with_files(
        client, images.REGISTRY.tag, {"/etc/docker/registry/config.yml": json.dumps(seed).encode()},
        name=f"{prefix}-seed", labels=owner, ports={"5000/tcp": ("127.0.0.1", seed_port)}, volumes=volumes,
    )
    wait_for_http(f"http://127.0.0.1:{seed_port}/v2/")
    return StandinUpstream(name=prefix, port=seed_port, alias=alias)
