"""Pebble, the ACME test server, on the stack's network: the stage/prod TLS modes against it."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import re
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass

import docker
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from testbed import images
from testbed.clients import free_port, put_files, wait_until

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


def make_pebble_api_certificate(alias: str = PEBBLE_ALIAS, addresses: tuple[str, ...] = ()) -> PebbleApiCertificate:
    """A throwaway CA and a leaf for `alias` (what the front dials), 127.0.0.1 and `addresses`
    (where the test reaches the management API)."""
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
    names = [x509.DNSName(alias), x509.DNSName("localhost")] + [
        x509.IPAddress(ipaddress.ip_address(address)) for address in ("127.0.0.1", *addresses)]
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
    management_address: str = "127.0.0.1"

    def _management(self, path: str) -> str:
        context = ssl.create_default_context(cadata=self.api.ca_pem)
        url = f"https://{self.management_address}:{self.management_port}{path}"
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
    client: docker.DockerClient, network: str, name: str, api: PebbleApiCertificate, alias: str = PEBBLE_ALIAS,
    hosts: dict[str, str] | None = None, management_address: str = "127.0.0.1",
) -> Pebble:
    """Start Pebble on `network` under `alias`, validating challenges for real.

    It resolves names through Docker's embedded DNS (127.0.0.11), so the front's network
    aliases (the public hostnames) lead it to the front, and it validates HTTP-01 on port 80
    as Let's Encrypt does. PEBBLE_VA_NOSLEEP only drops Pebble's artificial validation
    delays; PEBBLE_VA_ALWAYS_VALID stays off, so each challenge is really fetched.

    With `hosts` (name -> address) it resolves as the system does instead (Go's resolver reads
    /etc/hosts first), so a test chooses which front validates. `management_address` is where
    the engine publishes the management API (another engine's node address, say).
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
        command=["-config", f"{PEBBLE_CONFIG_DIR}/pebble-config.json"] + (
            [] if hosts else ["-dnsserver", "127.0.0.11:53"]),
        name=name,
        network=network,
        networking_config={network: {"Aliases": [alias]}},
        extra_hosts=hosts or None,
        ports={f"{PEBBLE_MANAGEMENT_PORT}/tcp": (management_address, management_port)},
        environment={"PEBBLE_VA_NOSLEEP": "1"},
        labels={"registry-stack.e2e": "acme-server"},
        detach=True,
    )
    put_files(container, {
        f"{PEBBLE_CONFIG_DIR}/pebble-config.json": json.dumps(config),
        f"{PEBBLE_CONFIG_DIR}/cert.pem": api.cert_pem,
        f"{PEBBLE_CONFIG_DIR}/key.pem": api.key_pem,
    })
    container.start()
    pebble = Pebble(client=client, name=name, management_port=management_port, api=api,
                    management_address=management_address)
    wait_until(pebble.issuing_root_pem, timeout=30,
               what=f"Pebble's management API on {management_address}:{management_port}")
    return pebble
