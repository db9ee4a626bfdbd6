"""A registry client at the HTTP level: push a synthetic image, pull it back, timed and verified.

The load test and the benchmark talk to the registries with this instead of `docker pull`:
a pull here is exactly what crosses the wire (the manifest, then the config and every
layer), each blob checked against its digest, with nothing else in the timing (dockerd
would add gzip, layer extraction and its own download scheduling, the same on both sides
of every comparison and large enough to hide the registry's share).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import secrets
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
READ_CHUNK = 1024 * 1024


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass(frozen=True)
class Blob:
    data: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class SyntheticImage:
    """An image nobody else has: random layers, so every byte must come from the registry."""

    config: Blob
    layers: tuple[Blob, ...]

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)

    @property
    def total_bytes(self) -> int:
        return sum(blob.size for blob in self.blobs)

    @property
    def manifest(self) -> bytes:
        def descriptor(blob: Blob, media_type: str) -> dict[str, object]:
            return {"mediaType": media_type, "size": blob.size, "digest": blob.digest}

        return json.dumps({
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": descriptor(self.config, CONFIG_TYPE),
            "layers": [descriptor(layer, LAYER_TYPE) for layer in self.layers],
        }, indent=3).encode()

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest)


def synthetic_image(layer_sizes: list[int]) -> SyntheticImage:
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{secrets.token_hex(32)}" for _ in layer_sizes]},
    }).encode()
    return SyntheticImage(Blob(config), tuple(Blob(secrets.token_bytes(size)) for size in layer_sizes))


@dataclass(frozen=True)
class Endpoint:
    """Where a registry answers: `https://name:port` (verified against `ca_file`) or `http://ip:port`."""

    base_url: str
    ca_file: str = ""
    auth_header: str = ""
    # Where to connect instead of resolving the URL's name (curl's --resolve): one swarm node
    # among several that serve the same name. TLS still checks the URL's name.
    address: str = ""

    def connect(self, timeout: float = 120) -> http.client.HTTPConnection:
        url = urlsplit(self.base_url)
        assert url.hostname is not None
        if url.scheme == "https":
            context = ssl.create_default_context(cafile=self.ca_file or None)
            if self.address:
                return _ResolvedHTTPSConnection(self.address, url.hostname, url.port or 443, context, timeout)
            return http.client.HTTPSConnection(url.hostname, url.port or 443, context=context, timeout=timeout)
        return http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.auth_header:
            headers["Authorization"] = self.auth_header
        return headers


class _ResolvedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to `address`, with SNI, certificate check and Host header for `hostname`."""

    def __init__(self, address: str, hostname: str, port: int, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(hostname, port, context=context, timeout=timeout)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


class RegistryError(AssertionError):
    """A registry answered something a client could not use."""


def _exchange(
    connection: http.client.HTTPConnection, endpoint: Endpoint, method: str, path: str,
    body: bytes | None = None, headers: dict[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    connection.request(method, path, body=body, headers=endpoint.headers(headers))
    answer = connection.getresponse()
    return answer, answer.read()


def push_image(endpoint: Endpoint, repository: str, tag: str, image: SyntheticImage) -> None:
    """Monolithic blob uploads (POST, then PUT with the digest), then the manifest."""
    connection = endpoint.connect()
    try:
        for blob in image.blobs:
            answer, _ = _exchange(connection, endpoint, "POST", f"/v2/{repository}/blobs/uploads/")
            if answer.status != 202:
                raise RegistryError(f"starting an upload to {repository}: HTTP {answer.status}")
            location = answer.getheader("Location", "")
            separator = "&" if "?" in location else "?"
            answer, _ = _exchange(
                connection, endpoint, "PUT", f"{location}{separator}digest={blob.digest}", body=blob.data,
                headers={"Content-Type": "application/octet-stream"},
            )
            if answer.status != 201:
                raise RegistryError(f"uploading {blob.digest} to {repository}: HTTP {answer.status}")
        answer, _ = _exchange(
            connection, endpoint, "PUT", f"/v2/{repository}/manifests/{tag}", body=image.manifest,
            headers={"Content-Type": MANIFEST_V2},
        )
        if answer.status != 201:
            raise RegistryError(f"putting the manifest {repository}:{tag}: HTTP {answer.status}")
    finally:
        connection.close()


@dataclass
class PullResult:
    seconds: float
    bytes_received: int
    blob_digests: list[str] = field(default_factory=list)


def _read_blob(answer: http.client.HTTPResponse, expected: str, verify: bool) -> int:
    digest = hashlib.sha256()
    received = 0
    while chunk := answer.read(READ_CHUNK):
        received += len(chunk)
        if verify:
            digest.update(chunk)
    if verify and f"sha256:{digest.hexdigest()}" != expected:
        raise RegistryError(f"blob {expected}: the bytes received have another digest")
    return received


def pull_image(endpoint: Endpoint, repository: str, reference: str, verify: bool = True) -> PullResult:
    """What a client does to pull: the manifest, then every blob it names, on one connection.

    Raises RegistryError on any answer but 200, and (with `verify`) on any digest mismatch.
    """
    started = time.monotonic()
    connection = endpoint.connect()
    try:
        answer, body = _exchange(
            connection, endpoint, "GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_V2}
        )
        if answer.status != 200:
            raise RegistryError(f"manifest {repository}:{reference}: HTTP {answer.status} {body[:200]!r}")
        manifest = json.loads(body)
        digests = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
        received = len(body)
        for digest in digests:
            connection.request("GET", f"/v2/{repository}/blobs/{digest}", headers=endpoint.headers())
            answer = connection.getresponse()
            if answer.status != 200:
                raise RegistryError(f"blob {digest} of {repository}: HTTP {answer.status} {answer.read()[:200]!r}")
            received += _read_blob(answer, digest, verify)
        return PullResult(time.monotonic() - started, received, digests)
    finally:
        connection.close()


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `fraction` of them at or below."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * fraction)) - 1]
