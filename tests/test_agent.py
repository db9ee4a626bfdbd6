"""The agent (components/agent_app) and how the program and the front use it (components/agent.py).

The agent's code runs here as it runs in its container (standard library only); its
upstream client is tested against a small in-process registry stand-in that challenges
like Docker Hub (a Bearer realm that hands out tokens) or like a Basic-auth registry.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from components import agent, renderers
from components.agent_app.probe import Answer, Prober, ProbeRequest, classify, is_limited, parse_path
from components.agent_app.server import AgentServer, make_prober
from components.agent_app.upstream import UpstreamAnswer, UpstreamClient, UpstreamConfig, parse_challenge
from components.settings import ConfigError, load_settings
from tests.harness import SecretValue, declare

HUB = UpstreamConfig("docker", "https://registry-1.docker.io")
PRIVATE = UpstreamConfig("ghcr", "https://ghcr.io", "robot", "token-1")
LIMITS = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "0;w=21600"}
DIGEST = "sha256:" + "ab" * 32


def request(kind: str = "manifests", reference: str = "1.0", cache_status: int = 500) -> ProbeRequest:
    return ProbeRequest("docker", "library/app", kind, reference, cache_status)


# -- which answer for which upstream verdict --------------------------------------------------


@pytest.mark.parametrize(("path", "parsed"), [
    ("/v2/library/alpine/manifests/3.18", ("library/alpine", "manifests", "3.18")),
    (f"/v2/a/b/c/blobs/{DIGEST}", ("a/b/c", "blobs", DIGEST)),
    ("/v2/x/manifests/1?ns=docker.io", ("x", "manifests", "1")),
    ("/v2/", None), ("/v2/x/tags/list", None), ("/v2/manifests/1", None), ("/healthz", None),
])
def test_paths_name_repository_kind_and_reference(path: str, parsed: tuple[str, str, str] | None) -> None:
    assert parse_path(path) == parsed


def test_a_429_or_a_success_with_no_pulls_left_is_rate_limited() -> None:
    assert is_limited(UpstreamAnswer(429))
    assert is_limited(UpstreamAnswer(200, LIMITS))  # Docker Hub's HEAD once the pull limit is used up
    assert not is_limited(UpstreamAnswer(200, {**LIMITS, "ratelimit-remaining": "12;w=21600"}))
    assert not is_limited(UpstreamAnswer(404, LIMITS))
    assert not is_limited(UpstreamAnswer(None, error="refused"))


def test_rate_limited_is_429_toomanyrequests_that_says_why_and_what_helps() -> None:
    answer = classify(request(), HUB, UpstreamAnswer(200, LIMITS))
    assert (answer.status, answer.code) == (429, "TOOMANYREQUESTS")
    assert "rate-limiting this cache" in answer.message
    assert "library/app:1.0" in answer.message
    assert "already in the cache still pull" in answer.message
    assert "upstreamCredentials" in answer.message
    assert answer.headers == {"Ratelimit-Limit": "100;w=21600", "Ratelimit-Remaining": "0;w=21600"}
    # With credentials set, the advice is only to wait.
    with_credentials = classify(request(), PRIVATE, UpstreamAnswer(429, {"retry-after": "60"}))
    assert "upstreamCredentials" not in with_credentials.message
    assert with_credentials.headers == {"Retry-After": "60"}


@pytest.mark.parametrize(("kind", "unknown"), [("manifests", "MANIFEST_UNKNOWN"), ("blobs", "BLOB_UNKNOWN")])
def test_content_the_upstream_lacks_or_cannot_give_is_unknown(kind: str, unknown: str) -> None:
    lacks = classify(request(kind, DIGEST), HUB, UpstreamAnswer(404))
    assert (lacks.status, lacks.code) == (404, unknown)
    assert "neither in the cache nor at the upstream 'docker'" in lacks.message
    down = classify(request(kind, DIGEST), HUB, UpstreamAnswer(None, error="Name does not resolve"))
    assert (down.status, down.code) == (404, unknown)
    assert "cannot be reached (Name does not resolve)" in down.message
    refused = classify(request(kind, DIGEST), HUB, UpstreamAnswer(401))
    assert (refused.status, refused.code) == (404, unknown)
    assert "no upstreamCredentials are set" in refused.message


def test_an_upstream_that_has_it_or_fails_makes_a_retryable_503() -> None:
    has_it = classify(request(cache_status=404), HUB, UpstreamAnswer(200))
    assert (has_it.status, has_it.code, has_it.headers) == (503, "UNAVAILABLE", {"Retry-After": "5"})
    assert "HTTP 404" in has_it.message
    failing = classify(request(), HUB, UpstreamAnswer(502))
    assert (failing.status, failing.code) == (503, "UNAVAILABLE")


def test_an_answer_is_a_registry_error_body_with_the_api_header() -> None:
    answer = Answer(404, "MANIFEST_UNKNOWN", "gone")
    assert json.loads(answer.body) == {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "gone", "detail": None}]}
    assert answer.all_headers()["Docker-Distribution-Api-Version"] == "registry/2.0"


def test_the_prober_asks_once_per_image_and_memo_period() -> None:
    asked: list[tuple[str, str, str]] = []
    now = [100.0]

    def head(upstream: UpstreamConfig, repository: str, kind: str, reference: str) -> UpstreamAnswer:
        asked.append((repository, kind, reference))
        return UpstreamAnswer(429)

    prober = Prober({"docker": HUB}, head, memo_seconds=10, clock=lambda: now[0])
    for _ in range(5):
        assert prober.answer(request()).status == 429
    assert len(asked) == 1
    prober.answer(request(reference="2.0"))
    now[0] += 11
    prober.answer(request())
    assert len(asked) == 3
    unknown = prober.answer(ProbeRequest("quay", "x", "manifests", "1", 500))
    assert (unknown.status, unknown.code) == (404, "NAME_UNKNOWN")


# -- the upstream client, against an in-process registry ---------------------------------------


class FakeRegistry(BaseHTTPRequestHandler):
    """Bearer (`mode` "bearer", Docker Hub's flow) or Basic auth; one manifest exists."""

    mode = "bearer"
    seen: ClassVar[list[tuple[str, str, str]]] = []
    user = ("robot", "token-1")

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        FakeRegistry.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        if self.path.startswith("/token"):
            expected = "Basic " + base64.b64encode(":".join(self.user).encode()).decode()
            if self.headers.get("Authorization") not in (None, expected):
                self._reply(401)
                return
            self._reply(200, {"Content-Type": "application/json"}, json.dumps({"token": "t0k"}).encode())
            return
        self._reply(405)

    def do_HEAD(self) -> None:
        FakeRegistry.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        port = self.server.server_address[1]
        authorized = self.headers.get("Authorization", "")
        if self.mode == "bearer" and authorized != "Bearer t0k":
            self._reply(401, {"WWW-Authenticate":
                              f'Bearer realm="http://127.0.0.1:{port}/token",service="fake",scope="x"'})
        elif self.mode == "basic" and not authorized.startswith("Basic "):
            self._reply(401, {"WWW-Authenticate": 'Basic realm="fake"'})
        elif "/blobs/" in self.path:
            self._reply(307, {"Location": "http://cdn.invalid/blob"})
        elif self.path.endswith("/manifests/1.0"):
            self._reply(200, {"Docker-Content-Digest": DIGEST, **LIMITS})
        else:
            self._reply(404)


@contextlib.contextmanager
def fake_registry(mode: str) -> Iterator[str]:
    FakeRegistry.mode = mode
    FakeRegistry.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_challenges_are_parsed_like_distributions_client() -> None:
    scheme, params = parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io"}


def test_the_client_follows_the_token_flow_and_keeps_the_token() -> None:
    with fake_registry("bearer") as url:
        client = UpstreamClient(UpstreamConfig("docker", url))
        answer = client.head("library/app", "manifests", "1.0")
        assert answer.status == 200
        assert answer.header("ratelimit-remaining") == "0;w=21600"
        token_requests = [path for method, path, _ in FakeRegistry.seen if path.startswith("/token")]
        assert token_requests == ["/token?scope=repository%3Alibrary%2Fapp%3Apull&service=fake"]
        assert client.head("library/app", "manifests", "2.0").status == 404
        # The second question reused the token: no new token request, no anonymous try.
        assert [p for _, p, _ in FakeRegistry.seen if p.startswith("/token")] == token_requests
        assert FakeRegistry.seen[-1] == ("HEAD", "/v2/library/app/manifests/2.0", "Bearer t0k")
        # A blob the upstream redirects to its CDN exists; the redirect is not followed.
        assert client.head("library/app", "blobs", DIGEST).status == 307


def test_the_client_sends_credentials_to_the_token_realm_and_to_a_basic_challenge() -> None:
    with fake_registry("bearer") as url:
        client = UpstreamClient(UpstreamConfig("ghcr", url, "robot", "token-1"))
        assert client.head("org/app", "manifests", "1.0").status == 200
        token_auth = [auth for _, path, auth in FakeRegistry.seen if path.startswith("/token")]
        assert token_auth == ["Basic " + base64.b64encode(b"robot:token-1").decode()]
        wrong = UpstreamClient(UpstreamConfig("ghcr", url, "robot", "wrong"))
        assert wrong.head("org/app", "manifests", "1.0").status == 401
    with fake_registry("basic") as url:
        client = UpstreamClient(UpstreamConfig("private", url, "robot", "token-1"))
        assert client.head("org/app", "manifests", "1.0").status == 200


def test_an_unreachable_upstream_is_an_answer_without_status() -> None:
    with fake_registry("bearer") as url:
        pass  # stopped: nothing listens on its port any more
    answer = UpstreamClient(UpstreamConfig("docker", url), timeout=1).head("x", "manifests", "1")
    assert answer.status is None and answer.error


# -- the agent's HTTP endpoints ------------------------------------------------------------------


def test_the_agent_answers_the_fronts_questions_over_http() -> None:
    with fake_registry("bearer") as url:
        config = {"upstreams": {"docker": {"url": url}}, "probe": {"timeoutSeconds": 2, "memoSeconds": 0}}
        server = AgentServer(("127.0.0.1", 0), make_prober(config))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        headers = {agent.UPSTREAM_HEADER: "docker", agent.CACHE_STATUS_HEADER: "500"}
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=5) as health:
                assert health.status == 200
            for method in ("GET", "HEAD"):
                ask = urllib.request.Request(f"{base}/v2/library/app/manifests/1.0", method=method, headers=headers)
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(ask, timeout=5)
                assert refused.value.code == 429
                assert refused.value.headers["Ratelimit-Remaining"] == "0;w=21600"
                body = refused.value.read()
                if method == "GET":
                    assert json.loads(body)["errors"][0]["code"] == "TOOMANYREQUESTS"
                else:
                    assert body == b""
            missing = urllib.request.Request(f"{base}/v2/library/app/manifests/{DIGEST}", headers=headers)
            with pytest.raises(urllib.error.HTTPError) as unknown:
                urllib.request.urlopen(missing, timeout=5)
            assert unknown.value.code == 404
            assert json.loads(unknown.value.read())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        finally:
            server.shutdown()
            server.server_close()


# -- what the program declares and the front routes ----------------------------------------------

USERS = ["alice:correct-horse-1"]


def settings_of(**values: Any):  # type: ignore[no-untyped-def]
    raw = {"users": json.dumps(USERS), **{k: json.dumps(v) if isinstance(v, list) else v for k, v in values.items()}}
    return load_settings(raw, {"users", "upstreamCredentials"}, "dev")


def test_agent_config_names_every_cached_upstream_and_its_credentials() -> None:
    settings = settings_of(upstreams=["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io"],
                           upstreamCredentials=["ghcr=robot:token-1"])
    config = json.loads(agent.agent_config(settings, {"ghcr": "token-1"}))
    assert config["upstreams"] == {
        "docker": {"url": "https://registry-1.docker.io"},
        "ghcr": {"url": "https://ghcr.io", "username": "robot", "password": "token-1"},
    }
    assert config["port"] == agent.AGENT_PORT


def test_the_agent_container_runs_the_shipped_sources_and_keeps_credentials_secret() -> None:
    values = {"users": [f"ci:{'x' * 12}"], "upstreamCredentials": ["docker=robot:upstream-token-9c1e"]}
    declaration = declare(values, secret_keys=("users", "upstreamCredentials"))
    container = declaration.containers["registry-stack-dev-agent"]
    assert isinstance(container.inputs["uploads"], SecretValue)
    uploads = {u["file"]: u["content"] for u in container.plain_inputs["uploads"]}
    assert {p: t for p, t in uploads.items() if p.endswith(".py")} == agent.agent_files()
    assert "upstream-token-9c1e" in uploads[agent.AGENT_CONFIG_PATH]
    assert container.plain_inputs["command"] == agent.agent_command()
    assert "ports" not in container.plain_inputs or not container.plain_inputs["ports"]
    assert "/healthz" in " ".join(container.plain_inputs["healthcheck"]["tests"])
    assert not [r.name for r in declaration.resources if "upstream-token-9c1e" in _outside_secrets(r.inputs)]


def _outside_secrets(value: Any) -> str:
    """Every string of an input that is not wrapped as a secret."""
    if isinstance(value, SecretValue):
        return ""
    if isinstance(value, dict):
        return " ".join(_outside_secrets(v) for v in value.values())
    if isinstance(value, list):
        return " ".join(_outside_secrets(v) for v in value)
    return str(value)


def test_without_a_cache_there_is_no_agent() -> None:
    declaration = declare({"users": [f"ci:{'x' * 12}"], "enableCache": False}, secret_keys=("users",))
    assert "registry-stack-dev-agent" not in declaration.containers


def test_agent_image_is_validated_by_key() -> None:
    with pytest.raises(ConfigError, match=r"registry-stack:agentImage='Not An Image' is invalid: expected an image"):
        settings_of(agentImage="Not An Image")
    assert settings_of().agent_image == "python:3.13-alpine"


def _cache_proxy(settings: Any, hostname: str) -> dict[str, Any]:
    config = json.loads(renderers.front_config(settings, [("alice", "$2b$04$hash")]))
    tls = next(s for s in config["apps"]["http"]["servers"].values() if ":443" in s["listen"])
    site = next(r for r in tls["routes"] if r.get("match", [{}])[0].get("host") == [hostname])
    proxies = [h for route in site["handle"][0]["routes"] for h in route["handle"] if h["handler"] == "reverse_proxy"]
    assert len(proxies) == 1
    return proxies[0]


def test_a_caches_content_misses_go_to_the_agent_then_the_standby() -> None:
    settings = settings_of()
    proxy = _cache_proxy(settings, settings.cache_hostname)
    by_status = {tuple(h["match"]["status_code"]): h["routes"] for h in proxy["handle_response"]}
    assert set(by_status) == {(500,), (404,)}
    standby = f"{settings.prefix}-cache-standby:{renderers.REGISTRY_PORT}"
    for status, pattern in (((500,), agent.CONTENT_PATH), ((404,), agent.MANIFEST_PATH)):
        probe_route, pass_route = by_status[status]
        assert probe_route["match"] == [{"path_regexp": {"pattern": pattern}}]
        probe = probe_route["handle"][0]
        assert [u["dial"] for u in probe["upstreams"]] == [agent.agent_dial(settings), standby]
        assert probe["headers"]["request"]["set"][agent.UPSTREAM_HEADER] == ["docker"]
        # Anything else (tags/list, _catalog, a blob's own 404) goes out as the cache said it.
        assert [h["handler"] for h in pass_route["handle"]] == ["copy_response_headers", "copy_response"]


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    (agent.MANIFEST_PATH, "/v2/library/alpine/manifests/3.18", True),
    (agent.MANIFEST_PATH, f"/v2/a/b/manifests/{DIGEST}", True),
    (agent.MANIFEST_PATH, "/v2/library/alpine/tags/list", False),
    (agent.MANIFEST_PATH, f"/v2/x/blobs/{DIGEST}", False),
    (agent.CONTENT_PATH, f"/v2/x/blobs/{DIGEST}", True),
    (agent.CONTENT_PATH, "/v2/x/blobs/uploads/0c2b-uuid", False),
    (agent.CONTENT_PATH, "/v2/_catalog", False),
])
def test_the_miss_patterns_select_content_requests_only(pattern: str, path: str, matches: bool) -> None:
    import re

    assert bool(re.search(pattern, path)) is matches


def test_the_front_speaks_tcp_protocols_only_and_challenges_once() -> None:
    settings = settings_of()
    config = json.loads(renderers.front_config(settings, [("alice", "$2b$04$hash")]))
    tls = next(s for s in config["apps"]["http"]["servers"].values() if ":443" in s["listen"])
    assert tls["protocols"] == ["h1", "h2"]  # no h3, so no Alt-Svc
    (unauthorized,) = tls["errors"]["routes"]
    headers = unauthorized["handle"][-1]["headers"]
    # The name as Go canonicalizes it, so it replaces the authentication handler's header.
    assert [name for name in headers if name.lower() == "www-authenticate"] == ["Www-Authenticate"]
