"""components.renderers, called directly (no Pulumi).

The Caddy config is checked by walking its JSON and by a small simulator of Caddy's route
semantics (matchers OR'ed per list, AND'ed per set; handlers chain until a responder;
`terminal` stops evaluation), so the tests assert what a request would get.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from typing import Any

import bcrypt
import pytest
import yaml

from components import agent, renderers
from tests import harness

USERS = harness.RENDER_USERS
PASSWORDS = dict(entry.split(":", 1) for entry in USERS)
SEED = harness.RENDER_SEED
OTHER_SEED = "5eed0002c0ffee42a1b2c3d4e5f60718"
FAST_COST = harness.FAST_BCRYPT_COST
ROOT_PEM = "-----BEGIN CERTIFICATE-----\nMIIBroot\n-----END CERTIFICATE-----\n"
WRITE_METHODS = ("PUT", "POST", "PATCH", "DELETE")
# The shared helpers (tests/harness.py), by the short names these tests use.
make = harness.render_settings
hashed = harness.hashed_users
front = harness.front_json
server = harness.tls_server


def servers(config: dict) -> list[dict]:
    return list(config["apps"]["http"]["servers"].values())


def dial_of(settings, role: str) -> str:
    return f"{settings.prefix}-{role}:{renderers.REGISTRY_PORT}"


def herd_dial_of(settings, cache_role: str) -> str:
    return f"{settings.prefix}-{cache_role}-herd:{renderers.HERD_PORT}"


SWITCHES = [(True, True), (True, False), (False, True)]
ACME = {"tlsMode": "letsencrypt-staging", "acmeEmail": "ops@example.com"}


# ---------------------------------------------------------------------------------------
# Caddy route simulator
# ---------------------------------------------------------------------------------------

RESPONDERS = ("static_response", "reverse_proxy", "file_server")


def _placeholders(text: str, request: dict) -> str:
    for key, value in request.get("captures", {}).items():
        text = text.replace("{" + key + "}", value)
    assert "{http.regexp." not in text, f"unresolved placeholder in {text!r}"
    return text


def _matcher(name: str, arg: Any, request: dict) -> bool:
    if name == "path_regexp":  # sets {http.regexp.<name>.<group>}, as Caddy's MatchPathRE
        found = re.search(arg["pattern"], request.get("path", "/v2/"))
        if found:
            captured = [found.group(0), *found.groups()]
            groups = {f"http.regexp.{arg['name']}.{i}": g for i, g in enumerate(captured)}
            request.setdefault("captures", {}).update(groups)
        return found is not None
    if name == "file":  # MatchFile with try_files: the first file that exists under root
        return any(arg["root"] + _placeholders(f, request) in request.get("files", ()) for f in arg["try_files"])
    if name == "host":
        return request["host"] in arg
    if name == "method":
        return request["method"] in arg
    if name == "remote_ip":
        address = ipaddress.ip_address(request["ip"])
        return any(address in ipaddress.ip_network(r, strict=False) for r in arg["ranges"])
    if name == "not":  # MatchNot: true when none of its matcher sets matches
        return not any(_matcher_set(s, request) for s in arg)
    raise AssertionError(f"the simulator does not know the {name!r} matcher")


def _matcher_set(matcher_set: dict, request: dict) -> bool:
    return all(_matcher(name, arg, request) for name, arg in matcher_set.items())


def _matches(route: dict, request: dict) -> bool:
    sets = route.get("match")
    return not sets or any(_matcher_set(s, request) for s in sets)


def _run(routes: list[dict], request: dict) -> tuple[list[dict], bool]:
    chain: list[dict] = []
    for route in routes:
        if not _matches(route, request):
            continue
        for handler in route["handle"]:
            if handler["handler"] == "subroute":
                sub, done = _run(handler["routes"], request)
                chain += sub
                if done:
                    return chain, True
            else:
                chain.append(handler)
                if handler["handler"] in RESPONDERS:
                    return chain, True
        if route.get("terminal"):
            return chain, True
    return chain, False


def serve(
    config: dict, host: str, method: str = "GET", ip: str = "10.1.2.3", path: str = "/v2/",
    files: tuple[str, ...] = (),
) -> list[dict]:
    """The handlers a request runs through, ending with the one that answers it (`files`: what
    exists on the front's read-only view of the registries' storage)."""
    request = {"host": host, "method": method, "ip": ip, "path": path, "files": files}
    chain, done = _run(server(config)["routes"], request)
    assert done and chain[-1]["handler"] in RESPONDERS, f"{method} {host} gets no answer: {chain}"
    return chain


def error_of(handler: dict) -> tuple[int, str]:
    assert handler["handler"] == "static_response"
    body = json.loads(handler["body"])
    return handler["status_code"], body["errors"][0]["code"]


def dials(config: dict) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("handler") == "reverse_proxy":
                found.extend(u["dial"] for u in node["upstreams"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


# ---------------------------------------------------------------------------------------
# Registry config
# ---------------------------------------------------------------------------------------


# distribution 3.x's configuration reference: docs/content/about/configuration.md of
# distribution/distribution (3.x line, read at commit 0045803f). Its "List of configuration
# options" documents these paths, among others; every key this program renders for 3.x must be
# one of them (a key 3.x does not know is silently ignored by its YAML parser, so a typo or a
# removed key would not even fail at start).
DISTRIBUTION_3_DOCUMENTED_KEYS = frozenset({
    "version", "log.level", "log.formatter", "log.fields", "log.accesslog.disabled",
    "storage.filesystem.rootdirectory", "storage.filesystem.maxthreads", "storage.delete.enabled",
    "storage.cache.blobdescriptor", "storage.cache.blobdescriptorsize",
    "storage.maintenance.uploadpurging", "storage.maintenance.readonly.enabled", "storage.redirect.disable",
    "http.addr", "http.net", "http.prefix", "http.host", "http.secret", "http.relativeurls",
    "http.draintimeout", "http.headers", "http.debug.addr", "http.debug.prometheus.enabled",
    "http.debug.prometheus.path", "health.storagedriver.enabled", "health.storagedriver.interval",
    "health.storagedriver.threshold", "proxy.remoteurl", "proxy.username", "proxy.password", "proxy.ttl",
})
# What 3.x removed (same document, whose option list no longer has them; registry-facts.md).
DISTRIBUTION_3_REMOVED_KEYS = ("reporting", "compatibility", "storage.oss", "storage.swift", "redis.addr",
                               "redis.pool", "loglevel")


def rendered_key_paths(config: dict, prefix: str = "") -> set[str]:
    """Dotted paths of the config's leaves; maps under `fields` and `headers` are values."""
    paths: set[str] = set()
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in ("fields", "headers"):
            paths |= rendered_key_paths(value, f"{path}.")
        else:
            paths.add(path)
    return paths


ALL_ROLE_CONFIGS = [
    ("build", {}), ("standby", {}),
    ("cache", {"upstream_url": "https://ghcr.io", "credentials": renderers.ProxyCredentials("r", "t"), "ttl": "72h"}),
]


def test_registry_config_path_per_major_version():
    # configuration.md (3.x): `-v config.yml:/etc/distribution/config.yml registry:3`;
    # 2.x images read /etc/docker/registry/config.yml (registry-facts.md).
    assert renderers.registry_config_path(2) == "/etc/docker/registry/config.yml"
    assert renderers.registry_config_path(3) == "/etc/distribution/config.yml"
    assert renderers.registry_config_path(4) == renderers.registry_config_path(3)


@pytest.mark.parametrize(("role", "kwargs"), ALL_ROLE_CONFIGS)
def test_every_key_rendered_for_registry_3_is_in_its_configuration_reference(role, kwargs):
    config = json.loads(renderers.registry_config(role, 3, **kwargs))
    undocumented = rendered_key_paths(config) - DISTRIBUTION_3_DOCUMENTED_KEYS
    assert not undocumented, f"not in distribution 3.x's configuration.md: {sorted(undocumented)}"


@pytest.mark.parametrize("major", [2, 3])
@pytest.mark.parametrize(("role", "kwargs"), ALL_ROLE_CONFIGS)
def test_no_key_that_registry_3_removed_is_rendered(role, kwargs, major):
    if major == 2:
        kwargs = {k: v for k, v in kwargs.items() if k != "ttl"}
    paths = rendered_key_paths(json.loads(renderers.registry_config(role, major, **kwargs)))
    for removed in DISTRIBUTION_3_REMOVED_KEYS:
        assert not any(path == removed or path.startswith(f"{removed}.") for path in paths), removed


def test_proxy_ttl_is_a_registry_3_key_and_refused_for_2():
    # configuration.md (3.x) `proxy.ttl`: "Expire proxy cache ... 168h(7 days) by default, set to 0
    # to disable cache expiration"; 2.8 has no such key and keeps cached content 7 days.
    assert json.loads(renderers.registry_config("cache", 3, "https://ghcr.io", ttl="0"))["proxy"]["ttl"] == "0"
    assert "ttl" not in json.loads(renderers.registry_config("cache", 3, "https://ghcr.io"))["proxy"]
    with pytest.raises(ValueError, match=r"3\.x"):
        renderers.registry_config("cache", 2, "https://ghcr.io", ttl="72h")


def test_registry_3_does_not_export_traces_to_a_collector_nobody_runs():
    # configuration.md (3.x) "Disable traces export": traces go to https://localhost:4318/v1/traces
    # by default; OTEL_TRACES_EXPORTER=none turns that off. 2.x has no tracing.
    assert renderers.registry_environment(3) == {"OTEL_TRACES_EXPORTER": "none"}
    assert renderers.registry_environment(2) == {}
    renderers.registry_environment(3)["OTEL_TRACES_EXPORTER"] = "otlp"  # a copy: the constant stays
    assert renderers.registry_environment(3) == {"OTEL_TRACES_EXPORTER": "none"}


@pytest.mark.parametrize(("role", "kwargs"), ALL_ROLE_CONFIGS)
def test_registry_2_and_3_get_the_same_config_apart_from_ttl(role, kwargs):
    # Everything else this program renders means the same in 2.8 and 3.x (both references).
    without_ttl = {k: v for k, v in kwargs.items() if k != "ttl"}
    assert renderers.registry_config(role, 2, **without_ttl) == renderers.registry_config(role, 3, **without_ttl)


@pytest.mark.parametrize("major", [2, 3])
def test_build_registry_config_has_no_proxy(major):
    text = renderers.registry_config("build", major)
    config = json.loads(text)
    assert "proxy" not in config
    assert yaml.safe_load(text) == config  # JSON is valid YAML: the registry reads the same thing
    assert config["storage"]["filesystem"]["rootdirectory"] == renderers.REGISTRY_DATA_DIR
    assert config["http"]["addr"] == f":{renderers.REGISTRY_PORT}"
    assert config["storage"]["delete"]["enabled"] is True


def test_cache_registry_config_proxies_the_upstream_anonymously():
    text = renderers.registry_config("cache", 2, "https://registry-1.docker.io")
    config = json.loads(text)
    assert config["proxy"] == {"remoteurl": "https://registry-1.docker.io"}
    assert yaml.safe_load(text) == config
    assert "password" not in text and "username" not in text


def test_cache_registry_config_carries_credentials_only_when_given():
    creds = renderers.ProxyCredentials("robot", "tok-XYZZY-4242")
    config = json.loads(renderers.registry_config("cache", 3, "https://ghcr.io", creds))
    assert config["proxy"] == {"remoteurl": "https://ghcr.io", "username": "robot", "password": "tok-XYZZY-4242"}


@pytest.mark.parametrize("major", [2, 3])
def test_standby_registry_config_is_read_only_and_not_a_proxy(major):
    text = renderers.registry_config("standby", major)
    config = json.loads(text)
    assert yaml.safe_load(text) == config
    assert "proxy" not in config  # it must start while the upstream is unreachable
    assert config["storage"]["maintenance"]["readonly"]["enabled"] is True
    cache = json.loads(renderers.registry_config("cache", major, "https://registry-1.docker.io"))
    # Same storage as the cache, which it stands in for.
    assert config["storage"]["filesystem"] == cache["storage"]["filesystem"]
    assert "maintenance" not in cache["storage"]
    assert "maintenance" not in json.loads(renderers.registry_config("build", major))["storage"]


def test_registry_config_is_deterministic_and_role_specific():
    creds = renderers.ProxyCredentials("robot", "tok")
    first = renderers.registry_config("cache", 2, "https://ghcr.io", creds)
    assert first == renderers.registry_config("cache", 2, "https://ghcr.io", creds)
    assert first.endswith("\n")
    build = json.loads(renderers.registry_config("build", 2))
    cache = json.loads(first)
    assert build["log"]["fields"]["service"] != cache["log"]["fields"]["service"]


def test_registry_config_rejects_bad_roles_and_cache_without_upstream():
    with pytest.raises(ValueError, match="role"):
        renderers.registry_config("mirror", 2)
    with pytest.raises(ValueError, match="upstream"):
        renderers.registry_config("cache", 2)


# ---------------------------------------------------------------------------------------
# bcrypt
# ---------------------------------------------------------------------------------------


def test_bcrypt_hash_verifies_and_uses_the_configured_cost():
    digest = renderers.bcrypt_hash("correct-horse-1", SEED, "alice")
    assert digest.startswith(f"$2b${renderers.BCRYPT_COST:02d}$")
    assert renderers.BCRYPT_COST >= 10
    assert bcrypt.checkpw(b"correct-horse-1", digest.encode())
    assert not bcrypt.checkpw(b"correct-horse-2", digest.encode())


def test_bcrypt_hash_is_stable_for_seed_and_user():
    first = renderers.bcrypt_hash("correct-horse-1", SEED, "alice", cost=FAST_COST)
    assert first == renderers.bcrypt_hash("correct-horse-1", SEED, "alice", cost=FAST_COST)


def test_bcrypt_hash_differs_across_seeds_and_users():
    base = renderers.bcrypt_hash("same-password", SEED, "alice", cost=FAST_COST)
    other_seed = renderers.bcrypt_hash("same-password", OTHER_SEED, "alice", cost=FAST_COST)
    other_user = renderers.bcrypt_hash("same-password", SEED, "bob", cost=FAST_COST)
    assert len({base, other_seed, other_user}) == 3
    for digest in (base, other_seed, other_user):
        assert bcrypt.checkpw(b"same-password", digest.encode())


@pytest.mark.parametrize("user", ["alice", "bob", "ci", "x" * 64])
def test_bcrypt_salts_are_canonical(user):
    # bcrypt rejects or rewrites a salt whose last character carries stray bits; the salt we
    # derive must come back unchanged in the hash.
    salt = renderers.bcrypt_salt(SEED, user, cost=FAST_COST)
    digest = bcrypt.hashpw(b"pw-12345678", salt)
    assert digest[:29] == salt


# ---------------------------------------------------------------------------------------
# Front (Caddy) config
# ---------------------------------------------------------------------------------------


def test_front_config_is_json_and_deterministic():
    settings = make()
    users = hashed(settings)
    text = renderers.front_config(settings, users)
    assert text == renderers.front_config(settings, users)
    assert json.loads(text)["admin"]["listen"] == renderers.FRONT_ADMIN


@pytest.mark.parametrize("method", ["GET", "HEAD", *WRITE_METHODS])
def test_build_host_authenticates_every_request(method):
    settings = make()
    config = front(settings)
    chain = serve(config, settings.build_hostname, method)
    names = [h["handler"] for h in chain]
    assert names == ["authentication", "reverse_proxy"]
    assert chain[-1]["upstreams"] == [{"dial": dial_of(settings, "build")}]


def test_no_route_reaches_the_build_registry_without_authentication():
    """Structural walk: every reverse_proxy to the build registry comes after authentication."""
    settings = make(cacheClientNetworks=["10.0.0.0/8"])
    config = front(settings)
    build_dial = f"{settings.prefix}-build:{renderers.REGISTRY_PORT}"
    seen = []

    def walk(routes: list[dict], authenticated: bool) -> None:
        for route in routes:
            local = authenticated
            for handler in route["handle"]:
                if handler["handler"] == "authentication":
                    local = True
                elif handler["handler"] == "subroute":
                    walk(handler["routes"], local)
                elif handler["handler"] == "reverse_proxy":
                    dial = [u["dial"] for u in handler["upstreams"]]
                    if build_dial in dial:
                        seen.append(dial)
                        assert local, f"route reaches {build_dial} without authentication: {route}"
            if local and not route.get("match") and not route.get("terminal"):
                authenticated = True  # an unconditional auth route covers the routes after it

    walk(server(config)["routes"], False)
    assert seen, "the build registry must be reachable (after authentication)"


def test_build_accounts_hold_the_base64_bcrypt_hashes():
    settings = make()
    users = hashed(settings)
    config = front(settings)
    auth = serve(config, settings.build_hostname)[0]
    basic = auth["providers"]["http_basic"]
    assert basic["hash"] == {"algorithm": "bcrypt"}
    accounts = {a["username"]: base64.b64decode(a["password"]) for a in basic["accounts"]}
    assert accounts == {name: digest.encode() for name, digest in users}
    for name, digest in accounts.items():
        assert bcrypt.checkpw(PASSWORDS[name].encode(), digest)
    assert "correct-horse-1" not in json.dumps(config)


def test_checked_passwords_are_cached_because_dockerd_reconnects_for_every_request():
    """Without it each request of a push or pull pays a full bcrypt check (~0.25 s of CPU)."""
    settings = make()
    auth = serve(front(settings), settings.build_hostname)[0]
    assert auth["providers"]["http_basic"]["hash_cache"] == {}


@pytest.mark.parametrize("networks", [[], ["10.0.0.0/8", "192.168.7.0/24"]])
@pytest.mark.parametrize("method", WRITE_METHODS)
def test_cache_host_refuses_writes_like_a_registry(method, networks):
    settings = make(cacheClientNetworks=networks)
    config = front(settings)
    answer = serve(config, settings.cache_hostname, method, ip="10.9.9.9")[-1]
    assert error_of(answer) == (405, "UNSUPPORTED")
    assert answer["headers"]["Docker-Distribution-Api-Version"] == ["registry/2.0"]
    assert answer["headers"]["Content-Type"][0].startswith("application/json")
    # The hint names where to push instead.
    assert settings.build_hostname in json.loads(answer["body"])["errors"][0]["message"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_cache_host_reads_are_anonymous(method):
    settings = make()
    config = front(settings)
    chain = serve(config, settings.cache_hostname, method, ip="203.0.113.7")
    assert [h["handler"] for h in chain] == ["reverse_proxy"]  # no authentication: dockerd sends none
    proxy = chain[-1]
    # The cache's herd tier whenever it answers (it falls back to the standby itself); the
    # read-only standby directly only when the herd tier does not answer.
    assert [u["dial"] for u in proxy["upstreams"]] == [herd_dial_of(settings, "cache"),
                                                       dial_of(settings, "cache-standby")]
    assert proxy["load_balancing"]["selection_policy"]["policy"] == "first"
    assert proxy["flush_interval"] == -1  # blobs stream through unbuffered
    assert "remote_ip" not in json.dumps(config)


def test_cache_client_networks_limit_reads():
    settings = make(cacheClientNetworks=["10.0.0.0/8", "192.168.7.0/24"])
    config = front(settings)
    for ip in ("10.1.2.3", "192.168.7.200"):
        assert serve(config, settings.cache_hostname, "GET", ip)[-1]["handler"] == "reverse_proxy"
    for ip in ("192.168.8.1", "203.0.113.7", "11.0.0.1"):
        answer = serve(config, settings.cache_hostname, "GET", ip)[-1]
        assert error_of(answer) == (403, "DENIED")
        assert answer["headers"]["Docker-Distribution-Api-Version"] == ["registry/2.0"]
    # The limit is for the cache only: the build host still answers (with authentication).
    assert serve(config, settings.build_hostname, "GET", "203.0.113.7")[0]["handler"] == "authentication"


def test_cache_only_push_hint_does_not_name_a_build_host():
    settings = make(enableBuild=False)
    answer = serve(front(settings), settings.cache_hostname, "PUT")[-1]
    assert error_of(answer) == (405, "UNSUPPORTED")
    assert "docker-build" not in answer["body"]


def test_unauthorized_error_route_challenges_like_a_registry():
    settings = make()
    config = front(settings)
    realm = serve(config, settings.build_hostname)[0]["providers"]["http_basic"]["realm"]
    routes = server(config)["errors"]["routes"]
    unauthorized = [r for r in routes if "401" in json.dumps(r.get("match", ""))]
    assert len(unauthorized) == 1
    answer = unauthorized[0]["handle"][-1]
    assert error_of(answer) == (401, "UNAUTHORIZED")
    assert answer["headers"]["Www-Authenticate"] == [f'Basic realm="{realm}"']
    assert answer["headers"]["Docker-Distribution-Api-Version"] == ["registry/2.0"]


def test_unknown_hosts_get_a_registry_404():
    settings = make()
    config = front(settings)
    answer = serve(config, "docker-other.dev.internal.network")[-1]
    assert error_of(answer) == (404, "NAME_UNKNOWN")
    assert answer["headers"]["Docker-Distribution-Api-Version"] == ["registry/2.0"]


@pytest.mark.parametrize(("build", "cache"), SWITCHES)
@pytest.mark.parametrize("tls", [{}, ACME])
def test_only_enabled_hostnames_get_routes(build, cache, tls):
    settings = make(enableBuild=build, enableCache=cache, **tls)
    config = front(settings)
    routed = [host for route in server(config)["routes"] for m in route.get("match", []) for host in m.get("host", [])]
    assert routed == list(settings.hostnames)
    expected_dials = []
    if build:
        expected_dials.append(dial_of(settings, "build"))
    if cache:
        expected_dials += [herd_dial_of(settings, "cache"), dial_of(settings, "cache-standby")]
        # The cache's misses go to the agent, or to the standby when the agent is down.
        agent_dial = f"{settings.prefix}-agent:{agent.AGENT_PORT}"
        expected_dials += [agent_dial, dial_of(settings, "cache-standby")] * 2
    assert dials(config) == expected_dials
    for disabled in {settings.build_hostname, settings.cache_hostname} - set(settings.hostnames):
        assert error_of(serve(config, disabled)[-1]) == (404, "NAME_UNKNOWN")


def test_self_signed_mode_loads_the_certificate_files():
    settings = make()
    config = front(settings)
    srv = server(config)
    assert len(servers(config)) == 1  # nothing listens on port 80
    assert srv["listen"] == [":443"]
    assert srv["automatic_https"] == {"disable": True}
    tls_app = config["apps"]["tls"]
    assert tls_app["certificates"]["load_files"] == [
        {"certificate": renderers.FRONT_CERT_PATH, "key": renderers.FRONT_KEY_PATH}
    ]
    assert "automation" not in tls_app
    assert "acme" not in json.dumps(config)


@pytest.mark.parametrize(
    ("values", "directory"),
    [
        ({"tlsMode": "letsencrypt-staging"}, "https://acme-staging-v02.api.letsencrypt.org/directory"),
        ({"tlsMode": "letsencrypt"}, "https://acme-v02.api.letsencrypt.org/directory"),
        ({"tlsMode": "letsencrypt", "acmeDirectoryUrl": "https://pebble:14000/dir"}, "https://pebble:14000/dir"),
    ],
)
def test_acme_mode_uses_an_acme_issuer(values, directory):
    settings = make(acmeEmail="ops@example.com", **values)
    config = front(settings)
    srv = server(config)
    # Caddy obtains and renews the certificates itself: automatic HTTPS stays on.
    assert not srv.get("automatic_https", {}).get("disable")
    assert config["apps"]["http"]["http_port"] == 80
    assert config["apps"]["http"]["https_port"] == 443
    assert srv["listen"] == [f":{config['apps']['http']['https_port']}"]
    tls_app = config["apps"]["tls"]
    assert "certificates" not in tls_app
    (policy,) = tls_app["automation"]["policies"]
    assert policy["subjects"] == list(settings.hostnames)
    (issuer,) = policy["issuers"]
    assert issuer["module"] == "acme"
    assert issuer["ca"] == directory
    assert issuer["email"] == "ops@example.com"
    assert "trusted_roots_pem_files" not in issuer
    assert config["storage"]["root"].startswith(renderers.FRONT_DATA_DIR + "/")  # ACME state persists


@pytest.mark.parametrize(("https_port", "shown_port"), [(443, ""), (8443, ":8443")])
def test_acme_http_server_redirects_to_the_published_https_port(https_port, shown_port):
    settings = make(httpsPort=https_port, **ACME)
    config = front(settings)
    http_port = config["apps"]["http"]["http_port"]
    (plain,) = [s for s in servers(config) if s is not server(config)]
    assert plain["listen"] == [f":{http_port}"]
    chain, done = _run(plain["routes"], {"host": settings.build_hostname, "method": "GET", "ip": "10.1.2.3"})
    assert done
    (redirect,) = chain
    assert redirect["handler"] == "static_response"
    assert redirect["status_code"] in (301, 302, 307, 308)
    (location,) = redirect["headers"]["Location"]
    assert location == f"https://{{http.request.host}}{shown_port}{{http.request.uri}}"


def test_acme_trusted_root_only_when_set():
    settings = make(tlsMode="letsencrypt", acmeEmail="ops@example.com",
                    acmeDirectoryUrl="https://pebble:14000/dir", acmeTrustedRootPem=ROOT_PEM)
    (issuer,) = front(settings)["apps"]["tls"]["automation"]["policies"][0]["issuers"]
    assert issuer["trusted_roots_pem_files"] == [renderers.FRONT_ACME_ROOT_PATH]


def test_registry_error_shape():
    answer = renderers.registry_error(418, "TEAPOT", "short and stout", {"X-Extra": ["1"]})
    assert error_of(answer) == (418, "TEAPOT")
    assert json.loads(answer["body"])["errors"][0]["message"] == "short and stout"
    assert answer["headers"]["X-Extra"] == ["1"]
    assert answer["headers"]["Docker-Distribution-Api-Version"] == ["registry/2.0"]


# ---------------------------------------------------------------------------------------
# Host-side snippets
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("build", "cache"), [*SWITCHES, (False, False)])
def test_host_snippets_for_each_switch_combination(build, cache):
    settings = make(enableBuild=build, enableCache=cache)
    daemon = json.loads(renderers.daemon_json_snippet(settings))
    if cache:
        assert daemon == {"registry-mirrors": ["https://docker-cache.dev.internal.network"]}
    else:
        assert daemon == {}  # nothing to merge into daemon.json
    hosts = renderers.hosts_line(settings)
    names = [n for n, on in (("docker-build.dev.internal.network", build),
                             ("docker-cache.dev.internal.network", cache)) if on]
    assert hosts == (f"127.0.0.1 {' '.join(names)}" if names else "")
    login = renderers.docker_login_command(settings)
    # alice sorts first among the users; her name, never a password, is in the command.
    assert login == ("docker login docker-build.dev.internal.network -u alice" if build else "")
    assert "correct-horse" not in login


def test_host_snippets_carry_a_non_default_port_and_host_address():
    settings = make(httpsPort=8443, hostAddress="192.0.2.10", domain="corp.example.com")
    assert json.loads(renderers.daemon_json_snippet(settings)) == {
        "registry-mirrors": ["https://docker-cache.corp.example.com:8443"]
    }
    assert renderers.hosts_line(settings) == "192.0.2.10 docker-build.corp.example.com docker-cache.corp.example.com"
    assert renderers.docker_login_command(settings) == "docker login docker-build.corp.example.com:8443 -u alice"


# ---------------------------------------------------------------------------------------
# Stored blobs: the front sends them from the registries' storage (read-only)
# ---------------------------------------------------------------------------------------

BLOB_HEX = "ab" + "0123456789abcdef" * 3 + "0123456789abcd"


def stored(role: str, repository: str, hexdigest: str = BLOB_HEX, link: bool = True, data: bool = True):
    """What distribution's filesystem layout holds for a blob of `repository`, as the front sees it."""
    root = renderers.front_data_dir(role) + "/docker/registry/v2"
    files = []
    if link:
        files.append(f"{root}/repositories/{repository}/_layers/sha256/{hexdigest}/link")
    if data:
        files.append(f"{root}/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data")
    return tuple(files)


def blob_path(repository: str, hexdigest: str = BLOB_HEX) -> str:
    return f"/v2/{repository}/blobs/sha256:{hexdigest}"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_blob_the_build_registry_holds_is_sent_from_its_storage_after_authentication(method):
    settings = make()
    config = front(settings)
    chain = serve(config, settings.build_hostname, method, path=blob_path("team/app"),
                  files=stored("build", "team/app"))
    assert chain[0]["handler"] == "authentication"
    *_, headers, rewrite, file_server = chain
    assert file_server == {"handler": "file_server", "root": "/registry-data/build"}
    # distribution's layout: blobs/sha256/<first two hex digits>/<hex>/data
    expected = f"/docker/registry/v2/blobs/sha256/{BLOB_HEX[:2]}/{BLOB_HEX}/data"
    uri = rewrite["uri"].replace("{http.regexp.blob.3}", BLOB_HEX[:2]).replace("{http.regexp.blob.2}", BLOB_HEX)
    assert uri == expected
    # Answers like the registry does for a blob.
    set_headers = headers["response"]["set"]
    assert set_headers["Content-Type"] == ["application/octet-stream"]
    assert set_headers["Docker-Content-Digest"] == ["sha256:{http.regexp.blob.2}"]
    assert set_headers["Docker-Distribution-Api-Version"] == ["registry/2.0"]


@pytest.mark.parametrize(("files", "why"), [
    (stored("build", "other/app"), "linked to another repository only: docker push must still upload it"),
    (stored("build", "team/app", data=False), "the link without the data"),
    (stored("build", "team/app", link=False), "the data without this repository's link"),
    ((), "nothing stored"),
])
def test_a_blob_not_stored_for_that_repository_goes_to_the_registry(files, why):
    settings = make()
    chain = serve(front(settings), settings.build_hostname, "GET", path=blob_path("team/app"), files=files)
    assert chain[-1]["handler"] == "reverse_proxy", why
    assert [u["dial"] for u in chain[-1]["upstreams"]] == [dial_of(settings, "build")]


@pytest.mark.parametrize("path", [
    "/v2/team/app/manifests/1.0",  # tags change: only the registry knows them
    f"/v2/team/app/manifests/sha256:{BLOB_HEX}",
    f"/v2/team/app/blobs/sha256:{BLOB_HEX}x",
    "/v2/_catalog",
])
def test_only_blob_reads_are_sent_from_storage(path):
    settings = make()
    chain = serve(front(settings), settings.build_hostname, "GET", path=path, files=stored("build", "team/app"))
    assert chain[-1]["handler"] == "reverse_proxy"


def test_writes_to_a_stored_blob_path_still_reach_the_build_registry():
    settings = make()
    chain = serve(front(settings), settings.build_hostname, "DELETE", path=blob_path("team/app"),
                  files=stored("build", "team/app"))
    assert [h["handler"] for h in chain] == ["authentication", "reverse_proxy"]


def test_a_cached_blob_is_sent_anonymously_from_the_cache_storage_and_networks_still_apply():
    settings = make(cacheClientNetworks=["10.0.0.0/8"])
    config = front(settings)
    files = stored("cache", "library/alpine")
    chain = serve(config, settings.cache_hostname, "GET", ip="10.9.9.9", path=blob_path("library/alpine"), files=files)
    assert [h["handler"] for h in chain][-1] == "file_server"
    assert "authentication" not in [h["handler"] for h in chain]
    assert chain[-1]["root"] == "/registry-data/cache"
    denied = serve(config, settings.cache_hostname, "GET", ip="203.0.113.7", path=blob_path("library/alpine"),
                   files=files)
    assert error_of(denied[-1]) == (403, "DENIED")
    push = serve(config, settings.cache_hostname, "PUT", ip="10.9.9.9", path=blob_path("library/alpine"), files=files)
    assert error_of(push[-1]) == (405, "UNSUPPORTED")


def test_each_cache_host_reads_only_its_own_storage():
    settings = make(upstreams=["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io"])
    config = front(settings)
    ghcr_host = next(u for u in settings.caches if u.name == "ghcr").hostname(settings.domain)
    hub_files = stored("cache", "owner/app")
    chain = serve(config, ghcr_host, "GET", path=blob_path("owner/app"), files=hub_files)
    assert chain[-1]["handler"] == "reverse_proxy"  # Docker Hub's copy is not ghcr's
    ghcr_files = stored("ghcr-cache", "owner/app")
    chain = serve(config, ghcr_host, "GET", path=blob_path("owner/app"), files=ghcr_files)
    assert chain[-1] == {"handler": "file_server", "root": "/registry-data/ghcr-cache"}


# ---------------------------------------------------------------------------------------
# The herd tier (components/herd.py): Varnish in front of each cache
# ---------------------------------------------------------------------------------------

from components import herd  # noqa: E402


def vcl_sub(vcl: str, name: str) -> str:
    """The body of one VCL subroutine."""
    start = vcl.index(f"sub {name} {{")
    depth = 0
    for index in range(vcl.index("{", start), len(vcl)):
        depth += {"{": 1, "}": -1}.get(vcl[index], 0)
        if depth == 0:
            return vcl[start:index + 1]
    raise AssertionError(f"{name} is not closed")


HERD_VCL = herd.herd_vcl("registry-stack-dev-cache", "registry-stack-dev-cache-standby", 5000)


def test_herd_vcl_has_balanced_braces_and_both_registries_as_backends():
    assert HERD_VCL.startswith("vcl 4.1;")
    assert HERD_VCL.count("{") == HERD_VCL.count("}")
    for name, host in (("cache", "registry-stack-dev-cache"), ("standby", "registry-stack-dev-cache-standby")):
        block = HERD_VCL[HERD_VCL.index(f"backend {name} {{"):]
        assert f'.host = "{host}";' in block.split("}", 1)[0]
        assert '.port = "5000";' in block.split("}", 1)[0]
    init = vcl_sub(HERD_VCL, "vcl_init")
    # The cache first, the standby when the cache's probe says sick.
    assert "directors.fallback()" in init
    assert init.index("add_backend(cache)") < init.index("add_backend(standby)")


@pytest.mark.parametrize(("url", "coalesced"), [
    (f"/v2/library/alpine/blobs/sha256:{'a' * 64}", True),
    (f"/v2/org/team/app/blobs/sha256:{'0' * 64}", True),
    ("/v2/library/alpine/manifests/3.18", False),  # tags change: always the registry
    (f"/v2/library/alpine/manifests/sha256:{'a' * 64}", False),
    (f"/v2/library/alpine/blobs/sha256:{'a' * 63}", False),
    ("/v2/", False),
    ("/v2/_catalog", False),
])
def test_only_blob_reads_by_digest_are_coalesced(url, coalesced):
    pattern = re.search(r'req\.url ~ "([^"]+)"', vcl_sub(HERD_VCL, "vcl_recv")).group(1)
    assert (re.search(pattern, url) is not None) == coalesced
    recv = vcl_sub(HERD_VCL, "vcl_recv")
    assert 'req.method == "GET" || req.method == "HEAD"' in recv
    assert recv.rstrip("}").rstrip().endswith("return (pass);")  # everything else passes through


def test_blobs_are_kept_in_memory_briefly_and_large_ones_are_not_kept():
    response = vcl_sub(HERD_VCL, "vcl_backend_response")
    assert "set beresp.storage = storage.herd;" in response
    assert f"set beresp.ttl = {herd.HERD_OBJECT_TTL};" in response
    assert "set beresp.do_stream = true;" in response  # waiting clients get bytes during the fill
    assert f"<= {herd.HERD_MAX_OBJECT_BYTES}" in response
    assert "beresp.status == 200" in response  # errors are never kept
    # Half the memory at most: the object being fetched cannot be evicted.
    assert herd.HERD_MAX_OBJECT_BYTES * 2 <= 1024**3 and herd.HERD_MEMORY == "1G"
    script = herd.herd_start_script("a", "b")
    assert f"-s herd=malloc,{herd.HERD_MEMORY}" in script  # memory, not disk: the cache's volume holds the copy
    assert "file," not in script


def test_a_failed_fetch_is_retried_once_on_the_standby():
    assert "return (retry);" in vcl_sub(HERD_VCL, "vcl_backend_error")
    fetch = vcl_sub(HERD_VCL, "vcl_backend_fetch")
    assert "bereq.retries > 0" in fetch and "set bereq.backend = standby;" in fetch


def test_herd_start_script_reloads_the_vcl_when_a_backend_moves():
    script = herd.herd_start_script("registry-stack-dev-cache", "registry-stack-dev-cache-standby")
    assert script.startswith("#!/bin/sh\n")
    assert 'names="registry-stack-dev-cache registry-stack-dev-cache-standby"' in script
    assert f"-a :{herd.HERD_PORT}" in script and '-f "$vcl"' in script
    assert f"vcl={herd.HERD_VCL_PATH}" in script
    assert 'vcl.load "g$generation"' in script and 'vcl.use "g$generation"' in script
    # varnishd runs in the foreground of a child the script waits for: the container ends with it.
    assert "varnishd -F" in script and 'wait "$child"' in script


def test_herd_start_script_is_valid_posix_sh(tmp_path):
    import shutil
    import subprocess
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell is not None
    path = tmp_path / "herd-start.sh"
    path.write_text(herd.herd_start_script("a", "b"))
    assert subprocess.run([shell, "-n", str(path)], capture_output=True).returncode == 0
