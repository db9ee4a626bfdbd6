"""The agent's files and config, and the front's routes to it: pure functions, no Pulumi.

The agent (components/agent_app, stdlib-only Python) runs in its own container beside the
caches. The front sends it the requests a cache could not serve (see `miss_handlers`), so
the client gets a registry error it can act on instead of distribution's `500 UNKNOWN`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import metrics, naming, pins
from .settings import Settings, Upstream

AGENT_PORT = 8080
AGENT_ROLE = naming.AGENT
AGENT_DIR = "/opt/registry-agent"
AGENT_CONFIG_PATH = "/etc/registry-agent/config.json"
AGENT_SOURCE = Path(__file__).resolve().parent / "agent_app"
# Headers the front sets on what it forwards to the agent (agent_app/server.py reads them).
UPSTREAM_HEADER = "X-Registry-Stack-Upstream"
CACHE_STATUS_HEADER = "X-Registry-Stack-Cache-Status"
# Content requests: `/v2/<name>/manifests/<reference>` and `/v2/<name>/blobs/<digest>`.
MANIFEST_PATH = r"^/v2/.+/manifests/[^/]+$"
CONTENT_PATH = r"^/v2/.+/(manifests|blobs)/[^/]+$"
# How long the agent waits for the upstream before it calls it unreachable, and how long
# it remembers a verdict (one upstream HEAD per image and period under a herd).
PROBE_TIMEOUT_SECONDS = 3
PROBE_MEMO_SECONDS = 10
# Where the agent sees each registry's storage (read-only) and the front's access log.
STORAGE_DIR = "/registries"
# The pins of each capped cache, one file each (the agent serves every cache): the file
# components/pins.py renders for PINS_PATH, under the upstream's name.
PINS_DIR = f"{pins.PINS_PATH}.d"
# How often the agent checks each capped cache against its cap (a walk of its storage; a
# pass under the cap reads nothing else).
EVICTION_INTERVAL_SECONDS = 20


def agent_files() -> dict[str, str]:
    """The agent's sources, by their path in the container."""
    return {
        f"{AGENT_DIR}/agent_app/{source.name}": source.read_text()
        for source in sorted(AGENT_SOURCE.glob("*.py"))
    }


def agent_command() -> list[str]:
    return ["python3", f"{AGENT_DIR}/agent_app", AGENT_CONFIG_PATH]


def agent_dial(settings: Settings) -> str:
    return settings.names.dial(AGENT_ROLE, AGENT_PORT)


def pins_path(upstream: Upstream) -> str:
    return f"{PINS_DIR}/{upstream.name}"


def pins_files(settings: Settings) -> dict[str, str]:
    """The pins file of each capped cache, by its path in the agent (what eviction never removes)."""
    return {pins_path(u): pins.pins_file(pins.pinned_references(u)) for u in settings.caches if u.max_bytes}


def storage_mounts(settings: Settings) -> list[tuple[str, str, bool]]:
    """(volume role, path in the agent, read-only) of each view; a capped cache's storage is
    writable: the agent evicts from it."""
    capped = {u.role for u in settings.caches if u.max_bytes}
    return [(role, path, role not in capped) for role, path in storage_views(settings).items()]


def storage_views(settings: Settings) -> dict[str, str]:
    """Volume role -> where the agent mounts it: each registry's storage, the access log."""
    # A build registry in a bucket, or on another swarm node, has no storage to mount here.
    has_build_volume = settings.enable_build and settings.front_sees_build_storage
    views = {naming.BUILD: f"{STORAGE_DIR}/{naming.BUILD}"} if has_build_volume else {}
    views.update({u.role: f"{STORAGE_DIR}/{u.role}" for u in settings.caches})
    if settings.writes_access_log:
        views[metrics.LOGS_ROLE] = metrics.LOG_DIR
    return views


def _registries(settings: Settings) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = [{"name": naming.BUILD, "role": naming.BUILD}] if settings.enable_build else []
    entries += [
        {"name": u.name, "role": u.role, **({"capBytes": u.max_bytes, "pinsPath": pins_path(u)} if u.max_bytes else {})}
        for u in settings.caches
    ]
    return [
        {
            **{k: v for k, v in entry.items() if k != "role"},
            "debugUrl": f"http://{settings.names.dial(entry['role'], metrics.REGISTRY_DEBUG_PORT)}",
            "dataDir": f"{STORAGE_DIR}/{entry['role']}",
            "countsBlobMisses": settings.registry_major_version >= 3,
        }
        for entry in entries
    ]


def _access_log(settings: Settings) -> dict[str, Any] | None:
    if not settings.writes_access_log:
        return None
    hosts = {u.hostname(settings.domain): u.name for u in settings.caches}
    if settings.enable_build:
        hosts[settings.build_hostname] = naming.BUILD
    return {"path": metrics.ACCESS_LOG, "hosts": hosts}


def agent_config(settings: Settings, passwords: dict[str, str]) -> str:
    """config.json of the agent; `passwords` by upstream name (plain: the caller keeps it secret)."""
    upstreams: dict[str, Any] = {}
    for upstream in settings.caches:
        entry: dict[str, str] = {"url": upstream.url}
        if upstream.username:
            entry["username"] = upstream.username
            entry["password"] = passwords[upstream.name]
        upstreams[upstream.name] = entry
    config: dict[str, Any] = {
        "port": AGENT_PORT,
        "upstreams": upstreams,
        "probe": {"timeoutSeconds": PROBE_TIMEOUT_SECONDS, "memoSeconds": PROBE_MEMO_SECONDS},
        "registries": _registries(settings),
    }
    if any(u.max_bytes for u in settings.caches):
        config["eviction"] = {"intervalSeconds": EVICTION_INTERVAL_SECONDS}
    access_log = _access_log(settings)
    if access_log:
        config["accessLog"] = access_log
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def _probe(settings: Settings, upstream: Upstream, standby_dial: str) -> dict[str, Any]:
    """Ask the agent why; if the agent cannot be reached, the standby (local storage only)."""
    return {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": agent_dial(settings)}, {"dial": standby_dial}],
        "load_balancing": {
            "selection_policy": {"policy": "first"},
            "try_duration": "2s",
            "try_interval": "250ms",
        },
        "health_checks": {"passive": {"fail_duration": "10s", "max_fails": 1}},
        "headers": {"request": {"set": {
            UPSTREAM_HEADER: [upstream.name],
            CACHE_STATUS_HEADER: ["{http.reverse_proxy.status_code}"],
        }}},
        "transport": {"protocol": "http", "dial_timeout": "2s"},
    }


def _pass_through() -> dict[str, Any]:
    """The cache's own answer, unchanged (status, headers and body)."""
    return {"handle": [{"handler": "copy_response_headers"}, {"handler": "copy_response"}]}


def miss_handlers(settings: Settings, upstream: Upstream, standby_dial: str) -> list[dict[str, Any]]:
    """`handle_response` of a cache's reverse proxy: which answers go to the agent.

    A manifest the cache answers with 404 or 500, and a blob it answers with 500 (its 404
    BLOB_UNKNOWN is right already); everything else is passed through as it came.
    """
    probe = _probe(settings, upstream, standby_dial)
    return [
        {
            "match": {"status_code": [500]},
            "routes": [{"match": [{"path_regexp": {"pattern": CONTENT_PATH}}], "handle": [probe]}, _pass_through()],
        },
        {
            "match": {"status_code": [404]},
            "routes": [{"match": [{"path_regexp": {"pattern": MANIFEST_PATH}}], "handle": [probe]}, _pass_through()],
        },
    ]
