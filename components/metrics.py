"""One metrics endpoint for the whole stack: pure functions, no Pulumi.

With `metricsPort` set, the front publishes a second, plain-HTTP listener, open only to
`metricsClientNetworks` (anything else gets 403), that serves

| path | what |
|---|---|
| `/metrics` | the front's own metrics (Caddy's `metrics` handler) |
| `/metrics/<role>` | a registry's Prometheus metrics from its debug port (`build`, `cache`, `<name>-cache`, ...) |
| `/metrics/agent` | the agent: hits and misses per cache (for 2.8 too), stored bytes, the cap, the probe's answers |
| `/stats` | the same as JSON, with the top images by pulls (`scripts/verify --stats` reads it) |

Plain HTTP, network-limited rather than authenticated: a password sent in clear would
be worse than none. The metrics hold no secret (no repository names either, except in
`/stats`). The registries' debug ports themselves stay unpublished; only their
`/metrics` is forwarded, never `/debug/pprof` or `/debug/vars`.

Pulls per image come from the front's access log, written (only when metrics are on,
or a cache has a size cap: its last pulls decide what is evicted) to a volume of its own
that the agent reads; the front's own volume, which holds the ACME account and keys, is
never shared.
"""

from __future__ import annotations

import json
from typing import Any

from . import naming
from .settings import Settings

METRICS_PORT = 9100  # inside the front container
REGISTRY_DEBUG_PORT = 5001
LOGS_ROLE = "logs"
LOG_DIR = "/var/log/registry-stack"
ACCESS_LOG = f"{LOG_DIR}/access.log"
ACCESS_LOGGER = "pulls"
# Caddy rolls the access log at this size and keeps this many old files: the window
# over which `/stats` counts pulls (about 20 000 requests per MiB of log).
ROLL_SIZE_MB = 20
ROLL_KEEP = 5


def registry_roles(settings: Settings) -> list[str]:
    """Every registry container with a debug port, in a stable order."""
    roles = [naming.BUILD] if settings.enable_build else []
    for upstream in settings.caches:
        roles += [upstream.role, upstream.standby_role]
    return roles


def _text(status: int, body: str) -> dict[str, Any]:
    return {"handler": "static_response", "status_code": status, "body": body,
            "headers": {"Content-Type": ["text/plain; charset=utf-8"]}}


def _forward(dial: str, path: str) -> list[dict[str, Any]]:
    return [
        {"handler": "rewrite", "uri": path},
        {"handler": "reverse_proxy", "upstreams": [{"dial": dial}], "transport": {"protocol": "http"}},
    ]


def metrics_server(settings: Settings, agent_dial: str) -> dict[str, Any]:
    """The Caddy server of the metrics listener."""
    routes: list[dict[str, Any]] = [
        {
            "match": [{"not": [{"remote_ip": {"ranges": list(settings.metrics_client_networks)}}]}],
            "handle": [_text(403, "this network may not read the metrics (metricsClientNetworks)\n")],
        },
        {"match": [{"path": ["/metrics"]}], "handle": [{"handler": "metrics"}]},
    ]
    for role in registry_roles(settings):
        dial = settings.names.dial(role, REGISTRY_DEBUG_PORT)
        routes.append({"match": [{"path": [f"/metrics/{role}"]}], "handle": _forward(dial, "/metrics")})
    if settings.caches:
        routes.append({"match": [{"path": ["/metrics/agent"]}], "handle": _forward(agent_dial, "/metrics")})
        routes.append({"match": [{"path": ["/stats"]}], "handle": _forward(agent_dial, "/stats")})
    paths = ["/metrics", *(f"/metrics/{r}" for r in registry_roles(settings))]
    if settings.caches:
        paths += ["/metrics/agent", "/stats"]
    routes.append({"handle": [_text(404, "paths: " + " ".join(paths) + "\n")]})
    return {
        "listen": [f":{METRICS_PORT}"],
        "routes": routes,
        "automatic_https": {"disable": True},
        "protocols": ["h1"],
    }


def add_to_front(config: dict[str, Any], registry_server: dict[str, Any], settings: Settings, agent_dial: str) -> None:
    """Turn metrics on in a rendered front config: the listener, Caddy's HTTP metrics."""
    config["apps"]["http"]["servers"]["metrics"] = metrics_server(settings, agent_dial)
    registry_server["metrics"] = {}  # Caddy >= 2.8 collects HTTP metrics only when asked


def add_access_log(config: dict[str, Any], registry_server: dict[str, Any]) -> None:
    """The access log the agent reads (Settings.writes_access_log: metrics on, or a cache capped)."""
    registry_server["logs"] = {"default_logger_name": ACCESS_LOGGER}
    access = f"http.log.access.{ACCESS_LOGGER}"
    config["logging"] = {"logs": {
        "default": {"exclude": [access]},
        ACCESS_LOGGER: {
            "writer": {"output": "file", "filename": ACCESS_LOG, "roll_size_mb": ROLL_SIZE_MB,
                       "roll_keep": ROLL_KEEP},
            "encoder": {"format": "json"},
            "include": [access],
        },
    }}


def metrics_url(settings: Settings) -> str:
    return f"http://{settings.host_address}:{settings.metrics_port}" if settings.metrics_port else ""


def scrape_config(settings: Settings) -> str:
    """The `scrape_configs` list for Prometheus (the `prometheusScrapeConfig` output).

    JSON, which is YAML too: paste it under `scrape_configs:` or load it as a file.
    """
    if not settings.metrics_port:
        return ""
    target = f"{settings.host_address}:{settings.metrics_port}"
    entries: list[dict[str, Any]] = [{"targets": [target], "labels": {"component": "front",
                                                                        "__metrics_path__": "/metrics"}}]
    for role in registry_roles(settings):
        labels = {"component": role, "__metrics_path__": f"/metrics/{role}"}
        upstream = next((u.name for u in settings.caches if role in (u.role, u.standby_role)), "")
        if upstream:
            labels["upstream"] = upstream
        entries.append({"targets": [target], "labels": labels})
    if settings.caches:
        entries.append({"targets": [target], "labels": {"component": "agent", "__metrics_path__": "/metrics/agent"}})
    job = {"job_name": settings.names.prefix, "scheme": "http", "scrape_interval": "30s", "static_configs": entries}
    return json.dumps([job], indent=2) + "\n"
