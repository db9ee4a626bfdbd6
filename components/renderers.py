"""Pure functions that turn Settings into the files the containers and hosts need.

No Pulumi here: each renderer takes plain values and returns text or a dict, so they are
tested directly. Output is deterministic (sorted keys, no timestamps, no random salts):
the same settings always render the same bytes, so `pulumi up` with unchanged config
changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import bcrypt

from . import agent, metrics, naming, tls_share
from .herd import HERD_PORT
from .settings import Settings, Upstream
from .swarm_settings import S3Storage

REGISTRY_PORT = 5000
REGISTRY_DEBUG_PORT = 5001
# The build registry's read-only twin during a cleanup window (components/build_cleanup.py).
MAINTENANCE_PORT = 5002
MAINTENANCE_DEBUG_PORT = 5003
# While it exists (relative to the build registry's storage), the front refuses pushes.
MAINTENANCE_MARKER = "registry-stack/maintenance"
MAINTENANCE_MESSAGE = (
    "the build registry is read-only while its maintenance window runs (garbage collection, buildCleanup); "
    "pulls keep working: retry the push in a few minutes"
)
# The front's health checks of a registry with a standby: how soon it notices one come or go.
HEALTH_INTERVAL_SECONDS = 5
PASSIVE_FAIL_SECONDS = 10
REGISTRY_DATA_DIR = "/var/lib/registry"
FRONT_CONFIG_PATH = "/etc/caddy/caddy.json"
FRONT_CERT_PATH = "/etc/caddy/tls/cert.pem"
FRONT_KEY_PATH = "/etc/caddy/tls/key.pem"
FRONT_ACME_ROOT_PATH = "/etc/caddy/tls/acme-root.pem"
FRONT_DATA_DIR = "/data"
FRONT_ADMIN = "localhost:2019"
# Caddy's storage (ACME account, certificates) in the front's volume.
FRONT_STORAGE_ROOT = f"{FRONT_DATA_DIR}/caddy"
# Each registry's storage, mounted read-only into the front (see _stored_blob_route).
FRONT_REGISTRY_DATA_DIR = "/registry-data"
BCRYPT_COST = 12
REGISTRY_API_HEADER = {"Docker-Distribution-Api-Version": ["registry/2.0"]}
READ_METHODS = ("GET", "HEAD", "OPTIONS")


# What distribution 3.x changed for the config this program renders, from its configuration
# reference (docs/content/about/configuration.md of distribution/distribution, 3.x line):
# - the official image reads /etc/distribution/config.yml (2.x: /etc/docker/registry/config.yml);
# - `proxy.ttl` exists (default 168h, 0 disables expiry); 2.x hard-codes 7 days;
# - traces are exported by default to https://localhost:4318/v1/traces, which no stack runs:
#   every batch would log an export error, so OTEL_TRACES_EXPORTER=none switches it off;
# - removed: `reporting` (bugsnag, newrelic), `compatibility.schema1`, the oss and swift
#   storage drivers, `redis.addr`/`redis.pool` (now go-redis `addrs`, `poolsize`, ...).
#   None of these is rendered for either version (tests/test_renderers.py checks it).
REGISTRY_3_ENVIRONMENT = {"OTEL_TRACES_EXPORTER": "none"}


def registry_config_path(major_version: int) -> str:
    """Where the official image of that major version reads its config."""
    return "/etc/distribution/config.yml" if major_version >= 3 else "/etc/docker/registry/config.yml"


def registry_environment(major_version: int) -> dict[str, str]:
    """Environment of a registry container of that major version (see REGISTRY_3_ENVIRONMENT)."""
    return dict(REGISTRY_3_ENVIRONMENT) if major_version >= 3 else {}


# ---------------------------------------------------------------------------------------
# Registry (distribution) config
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyCredentials:
    username: str
    password: str


def registry_config(
    role: str,
    major_version: int,
    upstream_url: str = "",
    credentials: ProxyCredentials | None = None,
    ttl: str = "",
    storage: S3Storage | None = None,
    storage_secret_key: str = "",
    drain_timeout: str = "",
    descriptor_cache: bool = True,
    http_secret: str = "",
) -> str:
    """config.yml for the build (push), cache (proxy) or standby registry.

    `drain_timeout` (http.draintimeout): on SIGTERM the registry finishes the requests it
    serves for that long before it exits (a cleanup window stops the build registry's writer).

    `descriptor_cache=False` (a capped cache and its standby): no `storage.cache`, so every
    blob lookup asks the storage. With `blobdescriptor: inmemory` the registry keeps a blob's
    descriptor after the agent's eviction removed its file, answers its Stat from memory and
    then fails to read it, where without it the proxy fetches the blob again from the
    upstream (proxyblobstore.go serveLocal: a failed local Stat falls through to the remote)
    and the standby answers 404. The cache is optional ("if configured", configuration.md
    `cache`); on a local filesystem a lookup without it is two small reads.

    `http_secret` (http.secret) signs the upload state a client carries between the requests of
    one blob upload; without it each registry process makes its own, so an upload whose PATCH
    reaches another replica than its POST fails (configuration.md: "If you are building a
    cluster of registries behind a load balancer, you MUST ensure the secret is the same for
    all registries"). Given to the build registry in swarm mode, where it has replicas.

    `storage` puts the build registry into a bucket (`storage_secret_key` is its secret key,
    revealed only here, so the config is a secret wherever it carries one).

    The standby is a read-only, non-proxy registry on the cache's storage: it serves what
    the cache holds while the cache cannot run (distribution 2.8 in proxy mode refuses to
    start when its upstream is unreachable, upstream issue 4038). "maintenance" is the
    build registry's read-only twin on its own ports, which serves pulls while a cleanup
    window runs garbage collection (components/build_cleanup.py).

    Rendered as JSON, which is valid YAML: deterministic and free of YAML quoting traps.
    """
    if role not in ("build", "maintenance", "cache", "standby"):
        raise ValueError(f"unknown registry role {role!r}")
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": f"registry-{role}"}},
        "storage": {
            "filesystem": {"rootdirectory": REGISTRY_DATA_DIR},
            # Delete lets the build registry drop tags and lets a cache expire blobs.
            "delete": {"enabled": True},
            **({"cache": {"blobdescriptor": "inmemory"}} if descriptor_cache else {}),
        },
        "http": {
            "addr": f":{REGISTRY_PORT}",
            # Behind the front: Location headers stay relative, so they carry the public
            # hostname and port the client used.
            "relativeurls": True,
            "headers": {"X-Content-Type-Options": ["nosniff"]},
            "debug": {
                "addr": f":{REGISTRY_DEBUG_PORT}",
                "prometheus": {"enabled": True, "path": "/metrics"},
            },
        },
        "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
    }
    if drain_timeout:
        config["http"]["draintimeout"] = drain_timeout
    if http_secret:
        config["http"]["secret"] = http_secret
    if storage is not None:
        if role != "build":
            raise ValueError("only the build registry keeps its data in a bucket")
        config["storage"] = _s3_storage(storage, storage_secret_key, major_version)
    if role in ("standby", "maintenance"):
        config["storage"]["maintenance"] = {"readonly": {"enabled": True}}
    if role == "maintenance":
        # Beside the writer for a few seconds at each end of the window: other ports.
        config["http"]["addr"] = f":{MAINTENANCE_PORT}"
        config["http"]["debug"]["addr"] = f":{MAINTENANCE_DEBUG_PORT}"
    if role == "cache":
        if not upstream_url:
            raise ValueError("a cache registry needs an upstream URL")
        proxy: dict[str, Any] = {"remoteurl": upstream_url}
        if credentials is not None:
            proxy["username"] = credentials.username
            proxy["password"] = credentials.password
        if ttl:
            if major_version < 3:
                raise ValueError("proxy ttl needs registry 3.x (2.x keeps cached content 7 days)")
            proxy["ttl"] = ttl
        config["proxy"] = proxy
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def cache_registry_config(
    upstream: Upstream, major_version: int, credentials: ProxyCredentials | None = None
) -> str:
    """The cache's config.yml (proxy of `upstream`); without the descriptor cache when capped."""
    return registry_config(
        "cache", major_version, upstream.url, credentials, upstream.ttl, descriptor_cache=not upstream.max_bytes
    )


def standby_registry_config(upstream: Upstream, major_version: int) -> str:
    """The standby's config.yml (read-only, on the cache's storage); no descriptor cache when capped."""
    return registry_config("standby", major_version, descriptor_cache=not upstream.max_bytes)


def _s3_storage(storage: S3Storage, secret_key: str, major_version: int) -> dict[str, Any]:
    """distribution's `s3` driver (docs/content/storage-drivers/s3.md of distribution/distribution).

    - `regionendpoint` is an S3-compatible store's URL; 3.x then needs `forcepathstyle: true`
      (its docs: "from version 3+ required", distribution issue 4528), 2.x uses path style
      whenever `regionendpoint` is set and has no such key;
    - `redirect.disable`: by default the registry answers a blob GET with a redirect to a
      pre-signed URL of the store, which a client reaches only if it can reach the store;
      streamed through the registry instead, the store stays private to the stack;
    - `secure` follows the endpoint's scheme; `v4auth` is the default of 3.x, explicit for 2.x.
    """
    s3: dict[str, Any] = {
        "bucket": storage.bucket,
        "region": storage.region,
        "secure": storage.secure,
        "v4auth": True,
    }
    if storage.endpoint:
        s3["regionendpoint"] = storage.endpoint
        if major_version >= 3:
            s3["forcepathstyle"] = True
    if storage.prefix:
        s3["rootdirectory"] = f"/{storage.prefix}"
    if storage.access_key:
        s3["accesskey"] = storage.access_key
        s3["secretkey"] = secret_key
    return {
        "s3": s3,
        "delete": {"enabled": True},
        "cache": {"blobdescriptor": "inmemory"},
        "redirect": {"disable": True},
    }


# ---------------------------------------------------------------------------------------
# Basic-auth hashes
# ---------------------------------------------------------------------------------------

_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def bcrypt_salt(seed: str, username: str, cost: int = BCRYPT_COST) -> bytes:
    """A bcrypt salt that is stable for (stack seed, user) and unique across both.

    A fresh random salt per run would change the front's config on every `pulumi up` and
    replace the container; the per-stack seed (kept in Pulumi state) keeps salts unguessable
    across sites while making re-runs byte-identical.
    """
    digest = hmac.new(seed.encode(), f"basic-auth:{username}".encode(), hashlib.sha256).digest()
    chars = [_BCRYPT_ALPHABET[b % 64] for b in digest[:21]]
    # The 22nd character carries only 2 bits; bcrypt rejects non-canonical ones.
    chars.append(_BCRYPT_ALPHABET[(digest[21] % 4) * 16])
    return f"$2b${cost:02d}${''.join(chars)}".encode()


def bcrypt_hash(password: str, seed: str, username: str, cost: int = BCRYPT_COST) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt_salt(seed, username, cost)).decode()


# ---------------------------------------------------------------------------------------
# Front (Caddy) config
# ---------------------------------------------------------------------------------------


def registry_error(
    status: int, code: str, message: str, extra_headers: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """A Caddy static_response that answers like a registry does: JSON errors + API header."""
    headers = {"Content-Type": ["application/json; charset=utf-8"], **REGISTRY_API_HEADER}
    headers.update(extra_headers or {})
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]})
    return {"handler": "static_response", "status_code": status, "headers": headers, "body": body}


def _reverse_proxy(dial: str, standby: str = "") -> dict[str, Any]:
    proxy: dict[str, Any] = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": dial}],
        # Stream blobs as they arrive instead of buffering: large layers, no size limit.
        "flush_interval": -1,
        "transport": {"protocol": "http", "dial_timeout": "10s"},
    }
    if standby:
        # Always the first upstream while it answers; the standby only when it does not
        # (a crash-looping cache has no DNS entry, so the dial fails fast).
        proxy["upstreams"].append({"dial": standby})
        proxy["load_balancing"] = {
            "selection_policy": {"policy": "first"},
            "try_duration": "5s",
            "try_interval": "250ms",
        }
        proxy["health_checks"] = {
            "active": {"uri": "/v2/", "interval": f"{HEALTH_INTERVAL_SECONDS}s", "timeout": "2s"},
            "passive": {"fail_duration": f"{PASSIVE_FAIL_SECONDS}s", "max_fails": 1},
        }
        proxy["transport"]["dial_timeout"] = "2s"
    return proxy


def _host_route(hostname: str, routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "match": [{"host": [hostname]}],
        "handle": [{"handler": "subroute", "routes": routes}],
        "terminal": True,
    }


def _authenticate(hashed_users: list[tuple[str, str]]) -> dict[str, Any]:
    accounts = [
        {"username": name, "password": base64.b64encode(hashed.encode()).decode()}
        for name, hashed in hashed_users
    ]
    basic = {
        "accounts": accounts,
        "hash": {"algorithm": "bcrypt"},
        "realm": "registry",
        # dockerd makes every registry request on a new connection, each with the password,
        # and one bcrypt check at cost 12 takes ~0.25 s of CPU: a small `docker push` took
        # ~3 s, nearly all of it here (bench/run.py, docs/evidence.md). Caddy keeps checked
        # passwords in memory (random eviction beyond 1000); a new guess still costs a check.
        "hash_cache": {},
    }
    return {"handler": "authentication", "providers": {"http_basic": basic}}


def front_data_dir(role: str) -> str:
    """Where the front sees a registry's storage (read-only): /registry-data/<role>."""
    return f"{FRONT_REGISTRY_DATA_DIR}/{role}"


# A blob request: /v2/<name>/blobs/sha256:<hex>; groups: name, hex, the first two hex digits.
_BLOB_PATH = r"^/v2/(.+)/blobs/sha256:(([0-9a-f]{2})[0-9a-f]{62})$"


def _stored_blob_route(role: str) -> dict[str, Any]:
    """GET/HEAD of a blob the registry of `role` holds for that repository: served from its storage.

    Why: a reverse-proxied pull crosses two processes and one more socket copy (registry ->
    front -> client); Caddy's file_server reads the same file the registry would and sends it
    with TLS directly, which is what TLS alone allows here (bench/run.py (c), docs/evidence.md).
    The repository's own link file (distribution's storage layout,
    docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link) must exist, as the
    registry checks before it serves a blob: a blob pushed to another repository stays unknown
    here, so `docker push` still uploads it and the manifest check still passes. Blob files
    are written elsewhere and renamed into place, so a file that exists is complete. Anything
    else (no link, no data, a cache's cold blob) falls through to the registry.
    """
    root = front_data_dir(role)
    # {http.regexp.<name>.<group>}: what path_regexp captured (JSON has no {re.*} shorthand).
    link = "/docker/registry/v2/repositories/{http.regexp.blob.1}/_layers/sha256/{http.regexp.blob.2}/link"
    data = "/docker/registry/v2/blobs/sha256/{http.regexp.blob.3}/{http.regexp.blob.2}/data"
    headers = {
        "handler": "headers",
        "response": {"set": {
            "Content-Type": ["application/octet-stream"],
            "Docker-Content-Digest": ["sha256:{http.regexp.blob.2}"],
            "Cache-Control": ["max-age=31536000"],
            **REGISTRY_API_HEADER,
        }},
    }
    serve = {"handle": [headers, {"handler": "rewrite", "uri": data}, {"handler": "file_server", "root": root}]}
    return {
        "match": [{"method": ["GET", "HEAD"], "path_regexp": {"name": "blob", "pattern": _BLOB_PATH}}],
        "handle": [{"handler": "subroute", "routes": [{
            "match": [{"file": {"root": root, "try_files": [link]}}],
            "handle": [{"handler": "subroute", "routes": [{
                "match": [{"file": {"root": root, "try_files": [data]}}], **serve,
            }]}],
        }]}],
    }


def _dial(settings: Settings, role: str) -> str:
    return settings.names.dial(role, REGISTRY_PORT)


def _cache_proxy(settings: Settings, upstream: Upstream) -> dict[str, Any]:
    standby = _dial(settings, upstream.standby_role)
    # Cold reads go through the herd tier, which coalesces them and falls back to the standby
    # itself; the front dials the standby directly only when the herd tier does not answer.
    herd_dial = settings.names.dial(naming.herd_role(upstream.name), HERD_PORT)
    proxy = _reverse_proxy(herd_dial, standby)
    # A cache's 404/500 for content goes to the agent, which asks the upstream why and
    # answers with an error a client can act on (429 TOOMANYREQUESTS, 404 MANIFEST_UNKNOWN).
    proxy["handle_response"] = agent.miss_handlers(settings, upstream, standby)
    return proxy


def _build_proxy(settings: Settings) -> dict[str, Any]:
    """To the build registry; with buildCleanup, to its read-only twin while the writer is stopped."""
    if not settings.cleanup.enabled:
        return _reverse_proxy(_dial(settings, "build"))
    return _reverse_proxy(_dial(settings, "build"), settings.names.dial("build", MAINTENANCE_PORT))


def _maintenance_routes(settings: Settings) -> list[dict[str, Any]]:
    """While a cleanup window runs (its marker is in the build storage), writes get a clear error.

    A read-only distribution would answer them `405 Method Not Allowed` without a registry
    error body (its upload and manifest handlers leave the write methods out when read-only,
    registry/handlers/blobupload.go of distribution/distribution), which a client shows as a bare
    status; this says why and for how long.
    """
    if not settings.cleanup.enabled:
        return []
    marker = {"file": {"root": front_data_dir("build"), "try_files": [f"/{MAINTENANCE_MARKER}"]}}
    refusal = registry_error(405, "UNSUPPORTED", MAINTENANCE_MESSAGE, {"Retry-After": ["300"]})
    return [{"match": [{**_write_match(), **marker}], "handle": [refusal]}]


def _build_routes(settings: Settings, hashed_users: list[tuple[str, str]]) -> list[dict[str, Any]]:
    # Every request, /v2/ included, must authenticate: the Docker client sends credentials
    # only after /v2/ has challenged it.
    return [
        {"handle": [_authenticate(hashed_users)]},
        *_maintenance_routes(settings),
        # Only a build registry on a volume of the front's own host has files the front can send.
        *([_stored_blob_route("build")] if settings.front_sees_build_storage else []),
        {"handle": [_build_proxy(settings)]},
    ]


def _write_match() -> dict[str, Any]:
    return {"not": [{"method": list(READ_METHODS)}]}


def _unified_routes(settings: Settings, hashed_users: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """registry.<domain>: pushes go to the build registry; pulls are routed by name.

    1. Everything needs a user (Docker's basic auth is all-or-nothing per hostname).
    2. A push of a name that belongs to an upstream (`<upstream>/...`, and Docker Hub's
       official `library/...`) is refused: it would be shadowed or shadow the upstream.
    3. Any other push goes to the build registry.
    4. A pull of `<upstream>/<name>` goes to that upstream's cache as `<name>`.
    5. Any other pull asks the build registry first and, on 404, Docker Hub's cache:
       the site's own images win a name clash.
    """
    routes: list[dict[str, Any]] = [{"handle": [_authenticate(hashed_users)]}]
    for upstream in settings.caches:
        owned = [f"/v2/{upstream.name}/*"] + (["/v2/library/*"] if upstream.is_docker_hub else [])
        message = (
            f"this name belongs to the upstream {upstream.name!r} ({upstream.url}): "
            "push your own images under another namespace"
        )
        routes.append({
            "match": [{**_write_match(), "path": owned}],
            "handle": [registry_error(403, "DENIED", message)],
        })
    routes.extend(_maintenance_routes(settings))
    routes.append({"match": [_write_match()], "handle": [_build_proxy(settings)]})
    for upstream in settings.caches:
        strip_namespace = {
            "handler": "rewrite",
            "uri_substring": [{"find": f"/v2/{upstream.name}/", "replace": "/v2/", "limit": 1}],
        }
        routes.append({
            "match": [{"path": [f"/v2/{upstream.name}/*"]}],
            "handle": [strip_namespace, _cache_proxy(settings, upstream)],
        })
    build_first = _build_proxy(settings)
    hub = settings.docker_hub_cache
    if hub is not None:
        build_first["handle_response"] = [
            {"match": {"status_code": [404]}, "routes": [{"handle": [_cache_proxy(settings, hub)]}]}
        ]
    routes.append({"handle": [build_first]})
    return routes


def _cache_routes(settings: Settings, upstream: Upstream) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = []
    if settings.cache_client_networks:
        routes.append({
            "match": [{"not": [{"remote_ip": {"ranges": list(settings.cache_client_networks)}}]}],
            "handle": [registry_error(403, "DENIED", "this network may not read the cache")],
        })
    push_hint = (
        f"the cache is read-only: push to {settings.names.address(settings.names.build_hostname)}"
        if settings.enable_build else "the cache is read-only"
    )
    routes.append({"match": [_write_match()], "handle": [registry_error(405, "UNSUPPORTED", push_hint)]})
    # Reads are anonymous: a Docker daemon never sends credentials to its mirror. Blobs the
    # cache holds are sent from its storage (also while the cache itself is down).
    routes.append(_stored_blob_route(upstream.role))
    routes.append({"handle": [_cache_proxy(settings, upstream)]})
    return routes


def _unauthorized_error_route() -> dict[str, Any]:
    # Spelled as Go canonicalizes it: the authentication handler has already set
    # "Www-Authenticate", and Caddy's static_response stores header names as written, so
    # "WWW-Authenticate" here went out as a second challenge header.
    challenge = {"Www-Authenticate": ['Basic realm="registry"']}
    return {
        "match": [{"expression": "{http.error.status_code} == 401"}],
        "handle": [registry_error(401, "UNAUTHORIZED", "authentication required", challenge)],
    }


def front_config(settings: Settings, hashed_users: list[tuple[str, str]], share_token_hash: str = "") -> str:
    """Caddy's native JSON config: one site per registry hostname on one TLS listener.

    ACME in swarm mode (components/tls_share.py): the orderer's front also runs the share
    listener (`share_token_hash` is the bcrypt hash of its token); a copy orders nothing.
    """
    routes: list[dict[str, Any]] = []
    if settings.enable_build:
        routes.append(_host_route(settings.build_hostname, _build_routes(settings, hashed_users)))
    for upstream in settings.caches:
        routes.append(_host_route(settings.names.cache_hostname(upstream.name), _cache_routes(settings, upstream)))
    if settings.unified_endpoint:
        routes.append(_host_route(settings.unified_hostname, _unified_routes(settings, hashed_users)))
    routes.append({"handle": [registry_error(404, "NAME_UNKNOWN", "no registry is served at this host name")]})

    server: dict[str, Any] = {
        "listen": [":443"],
        "routes": routes,
        "errors": {"routes": [_unauthorized_error_route()]},
        "tls_connection_policies": [{}],
        # No HTTP/3: only TCP is published, so an `Alt-Svc: h3=":443"` would send clients
        # to a UDP port nobody listens on (often not even 443).
        "protocols": ["h1", "h2"],
        # No read/write timeouts: a multi-GB layer upload must not be cut off.
        "read_header_timeout": "30s",
        "idle_timeout": "5m",
    }
    config: dict[str, Any] = {
        "admin": {"listen": FRONT_ADMIN},
        "storage": {"module": "file_system", "root": FRONT_STORAGE_ROOT},
        "apps": {"http": {"servers": {"registry": server}}, "tls": _tls_app(settings)},
    }
    if settings.metrics_port:  # the metrics listener, Caddy's metrics
        metrics.add_to_front(config, server, settings, agent.agent_dial(settings))
    if settings.writes_access_log:
        metrics.add_access_log(config, server)
    if settings.tls.is_acme:
        config["apps"]["http"]["http_port"] = 80
        config["apps"]["http"]["https_port"] = 443
        config["apps"]["http"]["servers"]["http_redirect"] = _redirect_to_https_server(settings)
    if tls_share.role(settings) == tls_share.COPY:
        # The orderer's certificates, copied; no automation, or Caddy would order them itself.
        server["automatic_https"] = {"disable": True}
        config["apps"]["tls"] = tls_share.copy_tls_app()
        config["apps"]["http"]["servers"]["http_redirect"]["routes"].insert(
            0, tls_share.challenge_forward_route(settings))
        config["apps"]["http"]["servers"]["tls_share"] = tls_share.copy_share_proxy(settings)
    elif settings.tls.is_acme:
        # Caddy still obtains and renews the certificates; only its redirect is replaced.
        server["automatic_https"] = {"disable_redirects": True}
    else:
        server["automatic_https"] = {"disable": True}
    if tls_share.role(settings) == tls_share.ORDERER:
        if not share_token_hash:
            raise ValueError("the orderer's front needs the share token's hash (components/tls_share.py)")
        config["apps"]["http"]["servers"]["tls_share"] = tls_share.share_server(
            settings, FRONT_STORAGE_ROOT, share_token_hash)
        config["apps"]["tls"]["certificates"] = tls_share.orderer_certificates()
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def _redirect_to_https_server(settings: Settings) -> dict[str, Any]:
    """Plain HTTP on port 80 (ACME modes): HTTP-01 challenges, and a redirect for the rest.

    Caddy answers ACME HTTP-01 challenges on every server before any route runs, so this
    server needs no route for them. Caddy's automatic redirect would name the container's
    port (443) and send clients to the wrong place whenever the front publishes HTTPS on
    another host port (httpsPort); this one names the published port.
    """
    location = settings.names.url("{http.request.host}") + "{http.request.uri}"
    redirect = {"handler": "static_response", "status_code": 308, "headers": {"Location": [location]}}
    return {"listen": [":80"], "routes": [{"handle": [redirect]}]}


def _tls_app(settings: Settings) -> dict[str, Any]:
    if not settings.tls.is_acme:
        return {"certificates": {"load_files": [{"certificate": FRONT_CERT_PATH, "key": FRONT_KEY_PATH}]}}
    issuer: dict[str, Any] = {
        "module": "acme",
        "ca": settings.tls.acme_directory_url,
        "email": settings.tls.acme_email,
        # HTTP-01 on port 80; TLS-ALPN-01 cannot work behind a published non-443 port.
        "challenges": {"tls-alpn": {"disabled": True}},
    }
    if settings.tls.acme_trusted_root_pem:
        issuer["trusted_roots_pem_files"] = [FRONT_ACME_ROOT_PATH]
    policy = {"subjects": list(settings.hostnames), "issuers": [issuer]}
    return {"automation": {"policies": [policy]}}


# ---------------------------------------------------------------------------------------
# Host-side snippets
# ---------------------------------------------------------------------------------------


def daemon_json_snippet(settings: Settings) -> str:
    """The daemon.json keys a Docker host needs to use the cache as its Docker Hub mirror.

    dockerd mirrors Docker Hub only, so only the cache of the upstream named docker counts.
    """
    hub = settings.docker_hub_cache
    if hub is None:
        return "{}\n"
    mirror = settings.names.url(settings.names.cache_hostname(hub.name))
    return json.dumps({"registry-mirrors": [mirror]}, indent=2) + "\n"


def hosts_line(settings: Settings) -> str:
    """The /etc/hosts line for hosts without DNS entries for the registry names."""
    if not settings.hostnames:
        return ""
    return f"{settings.host_address} {' '.join(settings.hostnames)}"


def docker_login_command(settings: Settings) -> str:
    if not settings.enable_build:
        return ""
    first_user = settings.users[0][0]
    return f"docker login {settings.names.address(settings.names.build_hostname)} -u {first_user}"
