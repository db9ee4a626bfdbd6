"""ACME in swarm mode: the first node's front orders the certificates, the other fronts serve copies.

Why not let every node's front order its own: they all answer the same public names, so the CA
would send a front's HTTP-01 challenge to whichever node DNS names (and fail it there), and the
site would order each certificate once per node (Let's Encrypt's rate limits count them). So:

- the **orderer**, the front of `swarmNodes[0]`, runs Caddy's ACME automation as one host does,
  its account and certificates on its node's volume. It also lends its current certificates
  (chain and key, PEM) to the other fronts: a share listener on `SHARE_PORT`, on the stack's
  overlay network only (not published), over TLS with a certificate of its own that the copies
  pin (a pulumi-tls self-signed certificate for the orderer's service name: the keys cross the
  overlay, which is not encrypted by default, and Docker's encrypted overlay needs the kernel's
  ESP support, which not every host has), behind basic auth with a token the program generates
  (a RandomPassword kept in state; the orderer's config holds only its bcrypt hash);
- the **copies**, every other node's front, order nothing (no automation policy, automatic
  HTTPS off). Their port 80 forwards ACME challenge requests to the orderer's port 80, so the CA
  may ask any node. A loop in their start script fetches each hostname's PEM (every 5 s until it
  has them all, then every `SYNC_SECONDS`) through its own Caddy (a listener on `LOCAL_SHARE`,
  127.0.0.1 only, that proxies to the orderer over the pinned TLS: busybox wget cannot check a
  certificate), keeps it on the node's front volume, and has Caddy reload when one changed.
  A restarted front serves its last copy at once, also while the orderer's node is down; a
  renewal reaches every node within `SYNC_SECONDS`.

When the orderer's node is down, the copies keep serving, and renewal waits for the node (Caddy
renews when a third of a certificate's lifetime remains: a month for Let's Encrypt's 90 days).
To move the ordering, list another node first in `swarmNodes`: it orders anew onto its volume.

Pure functions of settings and plain values (Caddy JSON pieces, a shell script); the renderers
and components/swarm.py put them together.
"""

from __future__ import annotations

import base64
import re
import shlex
from typing import Any
from urllib.parse import urlsplit

from . import naming
from .settings import Settings

ORDERER = "orderer"
COPY = "copy"
SHARE_PORT = 8444
# The share listener's own certificate and key (the copies pin the certificate as their only root).
SHARE_CERT_PATH = "/etc/caddy/tls/share-cert.pem"
SHARE_KEY_PATH = "/etc/caddy/tls/share-key.pem"
# A copy's way to the share listener: its own Caddy, which checks the orderer's certificate.
LOCAL_SHARE = "127.0.0.1:8445"
SHARE_USER = "tls-share"
# Where a copy keeps the orderer's certificates (its front volume, the data dir /data).
COPY_DIR = "/data/tls-share"
SCRIPT_PATH = "/etc/caddy/tls-share.sh"
# A secret file: the `Authorization` header value the copies send to the share listener.
AUTH_PATH = "/etc/caddy/tls-share-auth"
SYNC_SECONDS = 60
FIRST_SYNC_SECONDS = 5
# certmagic storage.go `safeKeyRE` ([^\w@.-], Go's \w is ASCII): what a storage key drops.
_UNSAFE = re.compile(r"[^0-9A-Za-z_@.-]")


def role(settings: Settings) -> str:
    """ORDERER or COPY for a swarm node's front with ACME; empty otherwise (one host: it orders)."""
    topology = settings.topology
    if not (topology.is_swarm and settings.tls.is_acme and settings.node):
        return ""
    return ORDERER if settings.node == topology.nodes[0] else COPY


def is_shared(settings: Settings) -> bool:
    """The stack's fronts share one orderer's certificates (ACME in swarm mode)."""
    return settings.topology.is_swarm and settings.tls.is_acme


def orderer_front(settings: Settings) -> str:
    """The orderer's front service, by its name on the overlay network."""
    return settings.for_node(settings.topology.nodes[0]).names.container(naming.FRONT)


def auth_header(token: str) -> str:
    """What a copy sends: basic auth of SHARE_USER with the token."""
    return "Basic " + base64.b64encode(f"{SHARE_USER}:{token}".encode()).decode()


# -- the orderer ---------------------------------------------------------------------------


def safe_key(text: str) -> str:
    """certmagic's `StorageKeys.Safe` (storage.go): one component of a storage key."""
    text = text.lower().strip()
    for old, new in ((" ", "_"), ("+", "_plus_"), ("*", "wildcard_"), (":", "-"), ("..", "")):
        text = text.replace(old, new)
    return _UNSAFE.sub("", text)


def issuer_key(directory_url: str) -> str:
    """certmagic's `ACMEIssuer.issuerKey` (acmeissuer.go): host, then the path with '-' for '/'.

    https://acme-v02.api.letsencrypt.org/directory -> acme-v02.api.letsencrypt.org-directory,
    the folder under `certificates/` where Caddy keeps that CA's certificates.
    """
    parts = urlsplit(directory_url)
    key = parts.netloc
    path = parts.path.replace("/", "-").replace("\\", "-").strip("-")
    return key + (f"-{path}" if path else "")


def certificate_files(storage_root: str, directory_url: str, hostname: str) -> tuple[str, str]:
    """Where Caddy (file_system storage at `storage_root`) keeps a hostname's certificate and key:
    `certificates/<issuer>/<name>/<name>.crt|.key` (certmagic `StorageKeys.SiteCert`/`SitePrivateKey`)."""
    site = f"{storage_root}/certificates/{safe_key(issuer_key(directory_url))}/{safe_key(hostname)}"
    name = safe_key(hostname)
    return f"{site}/{name}.crt", f"{site}/{name}.key"


def share_server(settings: Settings, storage_root: str, token_hash: str) -> dict[str, Any]:
    """The orderer's share listener: `GET /tls/<hostname>` answers the chain and key, PEM.

    Caddy's templates handler includes the two files Caddy itself keeps (`[[ ]]` delimiters, so
    nothing in a PEM or a placeholder is read as a template); a missing file is a 500, which a
    copy takes as "not yet" and keeps what it has.
    """
    auth = {"handler": "authentication", "providers": {"http_basic": {
        "accounts": [{"username": SHARE_USER, "password": token_hash}], "hash": {"algorithm": "bcrypt"}}}}
    routes: list[dict[str, Any]] = [{"handle": [auth]}]
    for hostname in settings.hostnames:
        crt, key = certificate_files(storage_root, settings.tls.acme_directory_url, hostname)
        routes.append({
            "match": [{"path": [f"/tls/{hostname}"]}],
            "handle": [
                {"handler": "templates", "file_root": "/", "delimiters": ["[[", "]]"],
                 "mime_types": ["text/plain"]},
                {"handler": "static_response", "status_code": 200,
                 "headers": {"Content-Type": ["text/plain"], "Cache-Control": ["no-store"]},
                 "body": f'[[include "{crt}"]][[include "{key}"]]'},
            ],
            "terminal": True,
        })
    routes.append({"handle": [{"handler": "static_response", "status_code": 404}]})
    return {
        "listen": [f":{SHARE_PORT}"], "routes": routes, "automatic_https": {"disable": True},
        # TLS with the share certificate (orderer_certificates), chosen by the name the copies dial.
        "tls_connection_policies": [{"match": {"sni": [orderer_front(settings)]}}],
    }


def orderer_certificates() -> dict[str, Any]:
    """The share listener's certificate, loaded beside the ACME automation (not managed by it)."""
    return {"load_files": [{"certificate": SHARE_CERT_PATH, "key": SHARE_KEY_PATH}]}


# -- a copy --------------------------------------------------------------------------------


def copy_tls_app() -> dict[str, Any]:
    """A copy's TLS: the PEM files its loop keeps (chain and key in one file each); no ACME."""
    return {"certificates": {"load_folders": [COPY_DIR]}}


def copy_share_proxy(settings: Settings) -> dict[str, Any]:
    """A copy's local listener to the share listener: TLS checked against the pinned certificate
    only, for the orderer's service name (Caddy 2.8+ `ca` pool, `file` provider)."""
    tls = {"ca": {"provider": "file", "pem_files": [SHARE_CERT_PATH]}, "server_name": orderer_front(settings)}
    proxy = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": f"{orderer_front(settings)}:{SHARE_PORT}"}],
        # The loop's wget has no timeout option it can use (busybox 1.35's `-T` crashes it), so
        # this proxy bounds each fetch: a lost orderer is a quick 502, and the copy keeps its files.
        "transport": {"protocol": "http", "tls": tls, "dial_timeout": "5s", "response_header_timeout": "10s"},
    }
    return {"listen": [LOCAL_SHARE], "routes": [{"handle": [proxy]}], "automatic_https": {"disable": True}}


def challenge_forward_route(settings: Settings) -> dict[str, Any]:
    """Port 80 of a copy: ACME HTTP-01 challenge requests go to the orderer, which holds them
    (reverse_proxy keeps the Host header, which the orderer's challenge handler matches)."""
    return {
        "match": [{"path": ["/.well-known/acme-challenge/*"]}],
        "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": f"{orderer_front(settings)}:80"}]}],
    }


def copy_start_script(settings: Settings, config_path: str, admin: str) -> str:
    """A copy's entrypoint: the sync loop in the background, then Caddy as the container's main process.

    Busybox sh and wget only (the official caddy image is Alpine). The loop waits for Caddy's
    admin API, so its first reload finds Caddy up; a reload that fails stays pending.
    """
    source = f"http://{LOCAL_SHARE}/tls"  # copy_share_proxy: TLS to the orderer, pinned
    hosts = " ".join(shlex.quote(h) for h in settings.hostnames)
    return f"""#!/bin/sh
# registry-stack: a front that serves copies of the certificates the front on {settings.topology.nodes[0]}
# orders (ACME in swarm mode, components/tls_share.py).
share={COPY_DIR}
mkdir -p "$share"

fetch() {{  # $1: a hostname. Succeeds when a new, complete copy replaced the old one.
  new="$share/.$1.new"
  if wget -q -O "$new" --header "Authorization: $(cat {AUTH_PATH})" "{source}/$1" 2>/dev/null \\
      && grep -q 'BEGIN CERTIFICATE' "$new" && grep -q 'PRIVATE KEY' "$new" \\
      && ! cmp -s "$new" "$share/$1.pem"; then
    mv "$new" "$share/$1.pem"
    return 0
  fi
  rm -f "$new"
  return 1
}}

sync_loop() {{
  until wget -q -O /dev/null http://{admin}/config/ 2>/dev/null; do sleep 1; done
  pending=0
  while :; do
    missing=0
    for host in {hosts}; do
      if fetch "$host"; then pending=1; echo "tls-share: new copy of $host's certificate"; fi
      [ -s "$share/$host.pem" ] || missing=1
    done
    if [ "$pending" = 1 ] && caddy reload --config {config_path} --force; then pending=0; fi
    if [ "$missing" = 1 ]; then sleep {FIRST_SYNC_SECONDS}; else sleep {SYNC_SECONDS}; fi
  done
}}

sync_loop &
exec caddy run --config {config_path}
"""
