"""Talking to a registry: HTTPS to its name, optionally through a pinned address, with the
right CA and the build user's credentials."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from registry_verify.outputs import Registry, StackOutputs, UsageError

API_VERSION_HEADER = "docker-distribution-api-version"


def parse_resolve(spec: str) -> tuple[str, int, str]:
    """curl's --resolve syntax: HOST:PORT:ADDRESS (an IPv6 ADDRESS may be in brackets)."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2]:
        raise UsageError(f"--resolve {spec!r}: expected HOST:PORT:ADDRESS, e.g. docker-build.example:443:10.0.0.5")
    return parts[0].lower(), int(parts[1]), parts[2].strip("[]")


def connect_address(registry: Registry, resolves: Sequence[tuple[str, int, str]], address: str) -> str:
    """The address to connect to instead of resolving the registry's name; "" = use DNS."""
    for host, port, target in resolves:
        if host == registry.host.lower() and port == registry.port:
            return target
    return address


@dataclass(frozen=True)
class Trust:
    context: ssl.SSLContext
    source: str


def trust_for(outputs: StackOutputs, ca_file: str | None) -> Trust:
    """The right CA: --ca-file, else the stack's own CA (self-signed mode), else the system's."""
    try:
        if ca_file:
            return Trust(ssl.create_default_context(cafile=ca_file), f"the CA file {ca_file}")
        if outputs.ca_cert_pem:
            return Trust(ssl.create_default_context(cadata=outputs.ca_cert_pem), "the stack's CA (caCertPem)")
    except (OSError, ssl.SSLError) as error:
        raise UsageError(f"cannot load the CA: {error}") from None
    return Trust(ssl.create_default_context(), "the system trust store")


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)  # never shown, not even in a traceback's locals

    def header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to `address` when given; SNI, the certificate check and Host use the name."""

    def __init__(self, host: str, port: int, address: str, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._address = address
        self._tls_context = context

    def connect(self) -> None:
        if not self._address:
            super().connect()
            return
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls_context.wrap_socket(raw, server_hostname=self.host)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None

    def error_code(self) -> str:
        """The first registry error code of the body (UNAUTHORIZED, UNSUPPORTED, ...), or ""."""
        body = self.json()
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("code", ""))
        return ""


@dataclass
class Client:
    registry: Registry
    trust: Trust
    address: str
    timeout: float

    def _connection(self) -> PinnedHTTPSConnection:
        return PinnedHTTPSConnection(
            self.registry.host, self.registry.port, self.address, self.trust.context, self.timeout
        )

    def request(
        self,
        method: str,
        path: str,
        credentials: Credentials | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        connection = self._connection()
        sent = dict(headers or {})
        if credentials is not None:
            sent["Authorization"] = credentials.header()
        try:
            connection.request(method, path, body=b"" if method in ("POST", "PUT") else None, headers=sent)
            response = connection.getresponse()
            body = response.read()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
        finally:
            connection.close()

    def peer_certificate(self) -> dict[str, Any]:
        """Complete a verified TLS handshake and return the server's certificate."""
        connection = self._connection()
        try:
            connection.connect()
            assert isinstance(connection.sock, ssl.SSLSocket)
            return connection.sock.getpeercert() or {}
        finally:
            connection.close()
