"""Host-side trust of a stack's CA (certs.d) and checks of the certificate a port serves."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from cryptography import x509

from testbed.clients import wait_until

CERTS_D = Path("/etc/docker/certs.d")


def trust_ca_for(addresses: list[str], ca_pem: str) -> list[Path]:
    folders = []
    for address in addresses:
        folder = CERTS_D / address
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ca.crt").write_text(ca_pem)
        folders.append(folder)
    return folders


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
    return wait_until(
        lambda: served_certificate(port, server_name, ca_pem), timeout,
        f"a certificate for {server_name} on 127.0.0.1:{port} verified by the given CA",
    )
