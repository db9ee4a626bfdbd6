"""Stand-in upstream registries: an anonymous Docker Hub stand-in and a token-auth private upstream."""

from __future__ import annotations

import base64
import contextlib
import datetime
import io
import json
import secrets
import tarfile
import time
from dataclasses import dataclass
from typing import Any

import bcrypt
import docker

from testbed import E2E_STACK_LABEL, images
from testbed.clients import free_port, wait_for_http


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


def create_with_files(client: docker.DockerClient, image: str, files: dict[str, bytes], **kwargs: Any) -> Any:
    """A started container of `image` with `files` (path -> bytes) put in before it starts."""
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
    create_with_files(
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
    create_with_files(
        client, images.REGISTRY.tag,
        {"/etc/docker/registry/config.yml": json.dumps(protected).encode(),
         "/etc/docker/registry/token.crt": token_cert.encode()},
        name=prefix, labels=owner, network=network, networking_config={network: {"Aliases": [alias]}}, volumes=volumes,
    )
    seed_port = free_port()
    seed = {"version": 0.1, "storage": storage, "http": {"addr": ":5000"}}
    create_with_files(
        client, images.REGISTRY.tag, {"/etc/docker/registry/config.yml": json.dumps(seed).encode()},
        name=f"{prefix}-seed", labels=owner, ports={"5000/tcp": ("127.0.0.1", seed_port)}, volumes=volumes,
    )
    wait_for_http(f"http://127.0.0.1:{seed_port}/v2/")
    return StandinUpstream(name=prefix, port=seed_port, alias=alias)
