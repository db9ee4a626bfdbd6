"""Metrics: the config keys, the front's metrics listener, what the agent counts, `verify --stats`,
the scrape config and the Grafana dashboard (components/metrics.py, components/agent_app/stats.py,
tools/registry_verify/stats.py, dashboards/registry-stack.json)."""

from __future__ import annotations

import io
import json
import os
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from components import agent, metrics, renderers
from components.agent_app import stats
from components.settings import ConfigError, load_settings
from registry_verify import main as verify_main
from registry_verify.stats import human_bytes, render
from tests.harness import declare

ROOT = Path(__file__).resolve().parent.parent
USERS = ["alice:correct-horse-1"]
NETWORKS = ["10.20.0.0/16"]
IMAGE = "application/vnd.docker.distribution.manifest.v2+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def settings_of(**values: Any):  # type: ignore[no-untyped-def]
    raw = {"users": json.dumps(USERS)}
    raw.update({k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in values.items()})
    return load_settings(raw, {"users"}, "dev")


def with_metrics(**values: Any):  # type: ignore[no-untyped-def]
    return settings_of(metricsPort=9100, metricsClientNetworks=NETWORKS, **values)


# -- config ---------------------------------------------------------------------------------------


def test_metrics_are_off_by_default() -> None:
    settings = settings_of()
    assert (settings.metrics_port, settings.metrics_client_networks) == (0, ())
    config = json.loads(renderers.front_config(settings, [("alice", "$2b$04$x")]))
    assert "metrics" not in config["apps"]["http"]["servers"]
    assert "logging" not in config
    assert metrics.metrics_url(settings) == "" and metrics.scrape_config(settings) == ""


@pytest.mark.parametrize(("values", "message"), [
    ({"metricsPort": 9100}, r"registry-stack:metricsPort=9100 but registry-stack:metricsClientNetworks is empty"),
    ({"metricsPort": 443, "metricsClientNetworks": NETWORKS}, r"metricsPort=443 is already registry-stack:httpsPort"),
    ({"metricsPort": 70000, "metricsClientNetworks": NETWORKS}, r"metricsPort='70000' is invalid: expected a whole"),
    ({"metricsPort": 9100, "metricsClientNetworks": ["not-a-range"]}, r"metricsClientNetworks='not-a-range'"),
])
def test_bad_metrics_config_is_refused_by_key_with_the_fix(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_of(**values)


# -- the front's metrics listener -----------------------------------------------------------------


def _metrics_server(settings: Any) -> dict[str, Any]:
    config = json.loads(renderers.front_config(settings, [("alice", "$2b$04$x")]))
    return config["apps"]["http"]["servers"]["metrics"]


def _route_for(server: dict[str, Any], path: str, ip: str) -> dict[str, Any]:
    """The first route a GET of `path` from `ip` matches (paths are exact here, as configured)."""
    import ipaddress

    for route in server["routes"]:
        matched = True
        for matcher in route.get("match", [{}]):
            if "not" in matcher:
                ranges = matcher["not"][0]["remote_ip"]["ranges"]
                matched = not any(ipaddress.ip_address(ip) in ipaddress.ip_network(r) for r in ranges)
            elif "path" in matcher:
                matched = path in matcher["path"]
        if matched:
            return route
    raise AssertionError(f"no route for {path}")


def test_the_listener_answers_listed_networks_only() -> None:
    server = _metrics_server(with_metrics())
    assert server["listen"] == [f":{metrics.METRICS_PORT}"]
    refused = _route_for(server, "/metrics", "192.0.2.7")["handle"][0]
    assert (refused["handler"], refused["status_code"]) == ("static_response", 403)
    assert "metricsClientNetworks" in refused["body"]
    assert _route_for(server, "/metrics", "10.20.3.4")["handle"][0]["handler"] == "metrics"


def test_each_registry_serves_its_metrics_and_nothing_else_of_its_debug_port() -> None:
    settings = with_metrics(upstreams=["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io"])
    server = _metrics_server(settings)
    roles = ["build", "cache", "cache-standby", "ghcr-cache", "ghcr-cache-standby"]
    assert metrics.registry_roles(settings) == roles
    for role in roles:
        rewrite, proxy = _route_for(server, f"/metrics/{role}", "10.20.0.1")["handle"]
        assert rewrite == {"handler": "rewrite", "uri": "/metrics"}  # never /debug/pprof or /debug/vars
        assert [u["dial"] for u in proxy["upstreams"]] == [settings.names.dial(role, 5001)]
    for path, target in (("/metrics/agent", "/metrics"), ("/stats", "/stats")):
        rewrite, proxy = _route_for(server, path, "10.20.0.1")["handle"]
        assert rewrite["uri"] == target
        assert [u["dial"] for u in proxy["upstreams"]] == [agent.agent_dial(settings)]
    fallback = _route_for(server, "/debug/vars", "10.20.0.1")["handle"][0]
    assert fallback["status_code"] == 404 and "/metrics/cache" in fallback["body"]


def test_metrics_turn_on_caddys_http_metrics_and_an_access_log_of_its_own() -> None:
    config = json.loads(renderers.front_config(with_metrics(), [("alice", "$2b$04$x")]))
    registry = next(s for s in config["apps"]["http"]["servers"].values() if ":443" in s["listen"])
    assert registry["metrics"] == {}
    assert registry["logs"] == {"default_logger_name": metrics.ACCESS_LOGGER}
    logs = config["logging"]["logs"]
    access = f"http.log.access.{metrics.ACCESS_LOGGER}"
    assert logs["default"]["exclude"] == [access]
    assert logs[metrics.ACCESS_LOGGER]["include"] == [access]
    assert logs[metrics.ACCESS_LOGGER]["writer"]["filename"] == metrics.ACCESS_LOG


def test_the_program_publishes_the_port_and_shares_only_the_log_volume() -> None:
    declaration = declare({"users": [f"ci:{'x' * 12}"], "metricsPort": 9191, "metricsClientNetworks": NETWORKS,
                           "bindAddress": "10.0.0.5", "hostAddress": "10.0.0.5"}, secret_keys=("users",))
    front = declaration.containers["registry-stack-dev-front"].plain_inputs
    assert {"internal": metrics.METRICS_PORT, "external": 9191, "ip": "10.0.0.5"} in [
        {k: p[k] for k in ("internal", "external", "ip")} for p in front["ports"]]
    front_volumes = {v["volumeName"]: v for v in front["volumes"]}
    assert front_volumes["registry-stack-dev-logs-data"]["containerPath"] == metrics.LOG_DIR
    assert not front_volumes["registry-stack-dev-logs-data"].get("readOnly")
    agent_volumes = {v["volumeName"]: v for v in declaration.containers["registry-stack-dev-agent"].plain_inputs[
        "volumes"]}
    assert set(agent_volumes) == {"registry-stack-dev-logs-data", "registry-stack-dev-cache-data",
                                  "registry-stack-dev-build-data"}  # never the front's (ACME keys)
    assert all(v["readOnly"] for v in agent_volumes.values())
    assert declaration.outputs["metricsUrl"] == "http://10.0.0.5:9191"
    (job,) = json.loads(declaration.outputs["prometheusScrapeConfig"])
    paths = {entry["labels"]["__metrics_path__"]: entry["labels"] for entry in job["static_configs"]}
    assert set(paths) == {"/metrics", "/metrics/build", "/metrics/cache", "/metrics/cache-standby", "/metrics/agent"}
    assert paths["/metrics/cache"]["upstream"] == "docker"
    assert all(entry["targets"] == ["10.0.0.5:9191"] for entry in job["static_configs"])


def test_the_agent_config_names_each_registry_and_the_hosts_of_the_log() -> None:
    config = json.loads(agent.agent_config(with_metrics(registryImage="registry:2.8.3"), {}))
    assert config["registries"] == [
        {"name": "build", "debugUrl": "http://registry-stack-dev-build:5001", "dataDir": "/registries/build",
         "countsBlobMisses": False},
        {"name": "docker", "debugUrl": "http://registry-stack-dev-cache:5001", "dataDir": "/registries/cache",
         "countsBlobMisses": False},
    ]
    assert config["accessLog"]["hosts"] == {"docker-build.dev.internal.network": "build",
                                            "docker-cache.dev.internal.network": "docker"}
    three = json.loads(agent.agent_config(with_metrics(), {}))  # registry 3.x, the default
    assert all(r["countsBlobMisses"] for r in three["registries"])


# -- what the agent counts ------------------------------------------------------------------------


def log_line(method: str, uri: str, content_type: str = IMAGE, status: int = 200, ip: str = "10.0.0.9",
             ts: float = 1000.0, host: str = "docker-cache.x:443") -> str:
    return json.dumps({"ts": ts, "request": {"method": method, "host": host, "uri": uri, "remote_ip": ip},
                       "status": status, "resp_headers": {"Content-Type": [content_type]}}) + "\n"


HOSTS = {"docker-cache.x": "docker"}
DIGEST = "sha256:" + "1" * 64
OTHER = "sha256:" + "2" * 64


def count(lines: list[str]) -> Counter[tuple[str, str]]:
    counter = stats.PullCounter()
    for line in lines:
        request = stats.manifest_request(line, HOSTS)
        if request:
            counter.add(request)
    return counter.pulls


@pytest.mark.parametrize(("client", "lines"), [
    ("docker (HEAD tag, GET digest)", [log_line("HEAD", "/v2/a/manifests/1"),
                                       log_line("GET", f"/v2/a/manifests/{DIGEST}")]),
    ("docker knowing the manifest (HEAD tag only)", [log_line("HEAD", "/v2/a/manifests/1")]),
    ("containerd, multi-platform", [log_line("HEAD", "/v2/a/manifests/1", INDEX),
                                    log_line("GET", f"/v2/a/manifests/{DIGEST}", INDEX),
                                    log_line("GET", f"/v2/a/manifests/{OTHER}")]),
    ("by digest, multi-platform", [log_line("GET", f"/v2/a/manifests/{DIGEST}", INDEX),
                                   log_line("GET", f"/v2/a/manifests/{OTHER}")]),
])
def test_one_pull_is_one_pull_whatever_the_client(client: str, lines: list[str]) -> None:
    assert count(lines) == {("docker", "a"): 1}, client


def test_what_is_not_a_pull_is_not_counted() -> None:
    lines = [
        log_line("GET", "/v2/a/manifests/1", status=404),
        log_line("GET", "/v2/a/blobs/" + DIGEST, "application/octet-stream"),
        log_line("GET", "/v2/a/tags/list", "application/json"),
        log_line("PUT", "/v2/a/manifests/1"),
        log_line("GET", "/v2/a/manifests/1", host="elsewhere.x"),
        "not json\n",
    ]
    assert count(lines) == {}


def test_two_clients_or_two_minutes_apart_are_two_pulls() -> None:
    lines = [log_line("HEAD", "/v2/a/manifests/1", ip="10.0.0.1"), log_line("HEAD", "/v2/a/manifests/1", ip="10.0.0.2"),
             log_line("GET", f"/v2/a/manifests/{DIGEST}", ip="10.0.0.1", ts=1030),
             log_line("GET", f"/v2/a/manifests/{DIGEST}", ip="10.0.0.1", ts=1200)]
    assert count(lines) == {("docker", "a"): 3}


def test_the_access_log_is_followed_across_rolls(tmp_path: Path) -> None:
    (tmp_path / "access-2026-12-01T10-00-00.000.log").write_text(log_line("HEAD", "/v2/old/manifests/1"))
    live = tmp_path / "access.log"
    live.write_text(log_line("HEAD", "/v2/a/manifests/1"))
    log = stats.AccessLog(str(live), HOSTS)
    assert log.top("docker") == [("a", 1), ("old", 1)]
    with live.open("a") as handle:
        handle.write(log_line("HEAD", "/v2/a/manifests/1", ts=2000)[:40])  # half a line
    assert log.top("docker") == [("a", 1), ("old", 1)]
    with live.open("a") as handle:
        handle.write(log_line("HEAD", "/v2/a/manifests/1", ts=2000)[40:])
    assert log.top("docker") == [("a", 2), ("old", 1)]
    live.rename(tmp_path / "access-2026-12-02T10-00-00.000.log")  # Caddy rolls it
    live.write_text(log_line("HEAD", "/v2/b/manifests/1"))
    assert log.top("docker") == [("a", 2), ("b", 1), ("old", 1)]
    assert log.top("docker", 1) == [("a", 2)]


def test_stored_bytes_count_files_not_links(tmp_path: Path) -> None:
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "data").write_bytes(b"x" * 1000)
    (tmp_path / "link").write_bytes(b"sha256:abc")
    os.symlink(tmp_path / "blobs" / "data", tmp_path / "alias")
    assert stats.stored_bytes(str(tmp_path)) == 1010
    assert stats.stored_bytes(str(tmp_path / "missing")) == 0


EXPVAR_28 = {"blob": {"requests": 6, "hits": 6, "misses": 0, "pulled_bytes": 0, "pushed_bytes": 900},
             "manifest": {"requests": 4, "hits": 4, "misses": 1, "pulled_bytes": 500, "pushed_bytes": 2000}}


def test_on_2x_the_blob_counters_2x_gets_wrong_are_dropped_and_the_ratio_is_over_manifests() -> None:
    kept = stats.reliable(EXPVAR_28, counts_blob_misses=False)
    assert kept["blob"] == {"requests": 6, "pushed_bytes": 900}
    assert kept["manifest"] == EXPVAR_28["manifest"]
    assert stats.reliable(EXPVAR_28, counts_blob_misses=True) == EXPVAR_28
    assert stats.hit_ratio(kept) == pytest.approx(0.75)  # 1 - 1 miss / 4 manifest requests, not 4 hits / 4
    assert stats.hit_ratio({}) is None


class FakeDebugPort(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        expvar = {"Requests": 4, "Hits": 3, "Misses": 1, "BytesPulled": 500, "BytesPushed": 2000}
        body = json.dumps({"registry": {"proxy": {"blobs": expvar, "manifests": expvar}}}).encode()
        self.send_response(200 if self.path == "/debug/vars" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_the_agent_reads_expvar_and_reports_json_and_prometheus(tmp_path: Path) -> None:
    debug = ThreadingHTTPServer(("127.0.0.1", 0), FakeDebugPort)
    threading.Thread(target=debug.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{debug.server_address[1]}"
        assert stats.proxy_counters(url)["manifest"] == {"requests": 4, "hits": 3, "misses": 1,
                                                          "pulled_bytes": 500, "pushed_bytes": 2000}
        assert stats.proxy_counters("http://127.0.0.1:1") == {}
        (tmp_path / "data").write_bytes(b"y" * 300)
        log = tmp_path / "access.log"
        log.write_text(log_line("HEAD", "/v2/library/alpine/manifests/3"))
        registries = [stats.Registry("docker", url, str(tmp_path), cap_bytes=1 << 30, counts_blob_misses=False)]
        sizes = stats.StorageSizes(registries)
        sizes.measure()
        report = stats.Stats(registries, stats.AccessLog(str(log), HOSTS), sizes)
        report.probe_answers[("docker", 429)] += 2
        snapshot = report.snapshot()
        (docker,) = snapshot["registries"]
        assert docker["storedBytes"] >= 300 + log.stat().st_size
        assert docker["topPulls"] == [{"repository": "library/alpine", "pulls": 1}]
        assert docker["hitRatio"] == pytest.approx(0.75)
        text = stats.prometheus_text(snapshot, report.probe_answers)
        assert 'registry_stack_proxy_misses_total{upstream="docker",type="manifest"} 1' in text
        assert 'registry_stack_proxy_misses_total{upstream="docker",type="blob"}' not in text
        assert 'registry_stack_proxy_requests_total{upstream="docker",type="blob"} 4' in text
        assert f'registry_stack_storage_cap_bytes{{registry="docker"}} {1 << 30}' in text
        assert 'registry_stack_probe_answers_total{upstream="docker",status="429"} 2' in text
        assert all(re.match(r"^(# (HELP|TYPE) \S+ .+|[a-z_]+\{[^}]*\} \d+(\.\d+)?)$", line)
                   for line in text.strip().splitlines()), text
    finally:
        debug.shutdown()
        debug.server_close()


# -- verify --stats -------------------------------------------------------------------------------

SNAPSHOT = {"registries": [
    {"name": "build", "kind": "build", "storedBytes": 3 * 1024**3, "capBytes": 0, "topPulls": [
        {"repository": "team/app", "pulls": 4}]},
    {"name": "docker", "kind": "cache", "storedBytes": 5 * 1024**2, "capBytes": 50 * 1024**3,
     "proxy": {"manifest": {"requests": 8, "misses": 2, "hits": 8, "pulled_bytes": 1024, "pushed_bytes": 9},
               "blob": {"requests": 20, "pushed_bytes": 99}},
     "hitRatio": 0.75,
     "topPulls": [{"repository": "library/alpine", "pulls": 7}, {"repository": "library/nginx", "pulls": 1}]},
    {"name": "ghcr", "kind": "cache", "storedBytes": None, "capBytes": 0, "proxy": {}, "topPulls": []},
]}


def test_the_stats_tables_read_at_a_glance() -> None:
    lines = render(SNAPSHOT)
    assert lines[0].split() == ["registry", "kind", "hit", "ratio", "misses/pulls", "from", "upstream", "stored",
                                "cap"]
    assert set(lines[1]) <= {"-", " "}
    docker = next(line for line in lines if line.startswith("docker"))
    assert docker.split() == ["docker", "cache", "75.0%", "2/8", "1.0", "KiB", "5.0", "MiB", "50.0", "GiB"]
    assert next(line for line in lines if line.startswith("ghcr")).split()[2:4] == ["?", "unreadable"]
    assert next(line for line in lines if line.startswith("build")).split()[-3:] == ["3.0", "GiB", "none"]
    top = lines[lines.index("top images by pulls (since the oldest access log the front keeps)") + 3:]
    assert [line.split() for line in top] == [["docker", "library/alpine", "7"], ["build", "team/app", "4"],
                                              ["docker", "library/nginx", "1"]]
    widths = {len(line) for line in lines[:5]}
    assert len(widths) <= 3  # columns line up (trailing spaces stripped)


@pytest.mark.parametrize(("value", "shown"), [(None, "-"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                              (5 * 1024**4, "5.0 TiB")])
def test_bytes_are_shown_in_binary_units(value: int | None, shown: str) -> None:
    assert human_bytes(value) == shown


class FakeStatsEndpoint(BaseHTTPRequestHandler):
    status = 200

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps(SNAPSHOT).encode()
        self.send_response(self.status if self.path == "/stats" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize(("status", "code", "expected"), [
    (200, 0, "library/alpine"), (403, 2, "metricsClientNetworks"),
])
def test_verify_stats_reads_the_metrics_url_output(status: int, code: int, expected: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    FakeStatsEndpoint.status = status
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeStatsEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    outputs = {"buildUrl": "", "cacheUrl": "https://docker-cache.x", "metricsUrl": f"http://127.0.0.1:{server.server_address[1]}"}
    try:
        out = io.StringIO()
        assert verify_main(["--stats", "--outputs", "-"], environ={}, stdin=io.StringIO(json.dumps(outputs)),
                           out=out) == code
    finally:
        server.shutdown()
        server.server_close()
    assert expected in out.getvalue() + capsys.readouterr().err


def test_verify_stats_without_a_metrics_endpoint_says_how_to_get_one(capsys: pytest.CaptureFixture[str]) -> None:
    outputs = {"buildUrl": "", "cacheUrl": "https://docker-cache.x"}
    assert verify_main(["--stats", "--outputs", "-"], environ={}, stdin=io.StringIO(json.dumps(outputs)),
                       out=io.StringIO()) == 2
    assert "set metricsPort and metricsClientNetworks" in capsys.readouterr().err


# -- the dashboard ------------------------------------------------------------------------------

DASHBOARD = ROOT / "dashboards" / "registry-stack.json"
# Every metric the stack exposes that the dashboard may use.
EXPOSED = {
    *(f"registry_stack_proxy_{name}_total" for name in stats.PROXY_FIELDS.values()),
    "registry_stack_storage_bytes", "registry_stack_storage_cap_bytes", "registry_stack_probe_answers_total",
    "registry_http_requests_total", "registry_http_request_duration_seconds_bucket",
    "caddy_http_requests_total", "caddy_http_request_duration_seconds_bucket",
}


def test_the_dashboard_shows_what_the_issue_asks_with_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
    titles = " | ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for wanted in ("hit ratio per upstream", "bytes from the upstream", "pulls and pushes", "latency",
                   "storage used against the cap"):
        assert wanted in titles
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\b((?:registry|caddy)_[a-z_]+)\b", target["expr"]))
    assert used <= EXPOSED, used - EXPOSED
    assert {"registry_stack_proxy_misses_total", "registry_stack_storage_cap_bytes"} <= used
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
