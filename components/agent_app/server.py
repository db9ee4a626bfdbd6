"""The agent's HTTP endpoints, for the front only (the agent publishes no port).

- `GET /healthz`: 200 while the agent runs (the container's health check).
- `GET /stats`: JSON of `stats.Stats.snapshot` (hit ratio, stored bytes, top pulls per registry).
- `GET /metrics`: the same, and the probe's answers, in Prometheus' text format.
- `GET|HEAD /v2/<name>/manifests|blobs/<reference>`: the answer of `probe` for a request a
  cache could not serve. The front names the cache's upstream in `X-Registry-Stack-Upstream`
  and the cache's status in `X-Registry-Stack-Cache-Status`.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .eviction import CappedCache, Evictor
from .probe import Answer, Prober, ProbeRequest, parse_path
from .stats import AccessLog, Registry, Stats, StorageSizes, prometheus_text
from .upstream import UpstreamAnswer, UpstreamClient, UpstreamConfig

UPSTREAM_HEADER = "X-Registry-Stack-Upstream"
CACHE_STATUS_HEADER = "X-Registry-Stack-Cache-Status"


def load_config(path: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(Path(path).read_text())
    return config


def upstreams_of(config: dict[str, Any]) -> dict[str, UpstreamConfig]:
    return {
        name: UpstreamConfig(name, entry["url"], entry.get("username", ""), entry.get("password", ""))
        for name, entry in config.get("upstreams", {}).items()
    }


def make_prober(config: dict[str, Any]) -> Prober:
    probe = config.get("probe", {})
    timeout = float(probe.get("timeoutSeconds", 3))
    clients = {name: UpstreamClient(upstream, timeout=timeout) for name, upstream in upstreams_of(config).items()}
    # Socket timeouts do not bound name resolution (a name Docker's DNS forwards to an
    # unreachable resolver can take many seconds): the whole question gets a deadline.
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
    deadline = 2 * timeout + 1

    def head(upstream: UpstreamConfig, repository: str, kind: str, reference: str) -> UpstreamAnswer:
        future = pool.submit(clients[upstream.name].head, repository, kind, reference)
        try:
            return future.result(timeout=deadline)
        except FutureTimeout:
            return UpstreamAnswer(None, error=f"no answer within {deadline:.0f} s")

    return Prober(upstreams_of(config), head, memo_seconds=float(probe.get("memoSeconds", 10)))


def make_stats(config: dict[str, Any]) -> Stats:
    registries = [
        Registry(entry["name"], entry["debugUrl"], entry["dataDir"], int(entry.get("capBytes", 0)),
                 bool(entry.get("countsBlobMisses", True)))
        for entry in config.get("registries", [])
    ]
    log = config.get("accessLog")
    access_log = AccessLog(log["path"], dict(log["hosts"])) if log else None
    return Stats(registries, access_log, StorageSizes(registries, float(config.get("storageIntervalSeconds", 60))))


class AgentHandler(BaseHTTPRequestHandler):
    server: AgentServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._dispatch(send_body=True)

    def do_HEAD(self) -> None:
        self._dispatch(send_body=False)

    def _dispatch(self, send_body: bool) -> None:
        if self.path == "/healthz":
            self._send(200, b"ok\n", {"Content-Type": "text/plain"}, send_body)
            return
        if self.path == "/stats":
            body = json.dumps(self.server.stats.snapshot(), indent=2).encode()
            self._send(200, body, {"Content-Type": "application/json"}, send_body)
            return
        if self.path == "/metrics":
            stats = self.server.stats
            text = prometheus_text(stats.snapshot(top=0), stats.probe_answers).encode()
            self._send(200, text, {"Content-Type": "text/plain; version=0.0.4"}, send_body)
            return
        parsed = parse_path(self.path)
        if parsed is None:
            self._send_answer(Answer(404, "NOT_FOUND", f"the agent does not serve {self.path}"), send_body)
            return
        repository, kind, reference = parsed
        try:
            cache_status = int(self.headers.get(CACHE_STATUS_HEADER, "0"))
        except ValueError:
            cache_status = 0
        request = ProbeRequest(self.headers.get(UPSTREAM_HEADER, ""), repository, kind, reference, cache_status)
        answer = self.server.prober.answer(request)
        self.server.stats.probe_answers[(request.upstream, answer.status)] += 1
        self._send_answer(answer, send_body)

    def _send_answer(self, answer: Answer, send_body: bool) -> None:
        self._send(answer.status, answer.body, answer.all_headers(), send_body)

    def _send(self, status: int, body: bytes, headers: dict[str, str], send_body: bool) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"agent: {self.address_string()} {format % args}\n")


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], prober: Prober, stats: Stats | None = None) -> None:
        super().__init__(address, AgentHandler)
        self.prober = prober
        self.stats = stats or Stats([], None, StorageSizes([]))


def make_evictor(config: dict[str, Any], stats: Stats) -> Evictor | None:
    """The size cap's loop over every capped cache; None without one (or without the access log)."""
    caches = [
        CappedCache(entry["name"], entry["dataDir"], int(entry["capBytes"]), entry.get("pinsPath", ""))
        for entry in config.get("registries", []) if int(entry.get("capBytes", 0))
    ]
    access_log = stats.access_log
    if not caches or access_log is None:
        return None
    evictor = Evictor(caches, access_log.pulls_of, float(config.get("eviction", {}).get("intervalSeconds", 20)))
    # /stats and /metrics report the evictor's counters.
    stats.evicted_images, stats.evicted_bytes = evictor.evicted_images, evictor.evicted_bytes
    return evictor


def serve(config: dict[str, Any]) -> None:
    port = int(config.get("port", 8080))
    stats = make_stats(config)
    stats.sizes.start()
    evictor = make_evictor(config, stats)
    if evictor:
        evictor.start()
    server = AgentServer(("0.0.0.0", port), make_prober(config), stats)
    sys.stderr.write(f"agent: listening on :{port} for {', '.join(config.get('upstreams', {})) or 'no upstream'}\n")
    server.serve_forever()
