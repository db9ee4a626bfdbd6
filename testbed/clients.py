"""Clients of a realized stack: HTTPS requests, the docker CLI, blob uploads, test images, waits."""

from __future__ import annotations

import base64
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testbed.stack import RealizedStack

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def put_files(container: Any, files: dict[str, str]) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    container.put_archive("/", buffer.getvalue())


def wait_until(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """probe()'s first result that does not raise; fails with the last error after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return probe()
        except (OSError, ssl.SSLError, AssertionError) as error:
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what}: not ready after {timeout}s: {error}") from error
        time.sleep(interval)


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
