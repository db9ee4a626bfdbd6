"""ACME in swarm mode (components/tls_share.py): one front orders, the others serve its copies.

The pure pieces first (certmagic's storage paths, the share listener, a copy's config and
script), then the stack under mocks. tests/e2e/test_swarm_acme.py runs it against Pebble on a
three-node swarm.
"""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import bcrypt
import pytest

from components import tls_share
from tests import harness
from tests.test_swarm import NODES, SECRET, declare_swarm, services

STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
ACME = {"tlsMode": "letsencrypt-staging", "acmeEmail": "ops@example.com"}


@pytest.mark.parametrize(("url", "key"), [
    # The folders Caddy keeps Let's Encrypt's certificates in (certmagic issuerKey + Safe).
    ("https://acme-v02.api.letsencrypt.org/directory", "acme-v02.api.letsencrypt.org-directory"),
    (STAGING, "acme-staging-v02.api.letsencrypt.org-directory"),
    # A port keeps its place, as ':' becomes '-' (Pebble in the e2e suite).
    ("https://pebble:14000/dir", "pebble-14000-dir"),
    ("https://ca.internal/acme/acme/directory/", "ca.internal-acme-acme-directory"),
    ("https://ca.internal", "ca.internal"),
])
def test_the_issuer_folder_is_named_as_certmagic_names_it(url: str, key: str) -> None:
    assert tls_share.safe_key(tls_share.issuer_key(url)) == key


def test_a_hostnames_files_are_where_caddy_keeps_them() -> None:
    crt, key = tls_share.certificate_files("/data/caddy", STAGING, "Docker-Build.Example.com")
    folder = "/data/caddy/certificates/acme-staging-v02.api.letsencrypt.org-directory/docker-build.example.com"
    assert (crt, key) == (f"{folder}/docker-build.example.com.crt", f"{folder}/docker-build.example.com.key")


def test_safe_key_drops_what_certmagic_drops() -> None:
    assert tls_share.safe_key(" A+B*c:d/../é ") == "a_plus_bwildcard_c-d"


def declared_acme(**values: Any) -> harness.Declaration:
    return declare_swarm(**ACME, **values)


@pytest.fixture(scope="module")
def declared() -> harness.Declaration:
    return declared_acme()


def front_config(declaration: harness.Declaration, node: str) -> dict[str, Any]:
    return json.loads(secret_file(declaration, node, "/etc/caddy/caddy.json"))


def secret_file(declaration: harness.Declaration, node: str, path: str) -> str:
    front = declaration.named(f"registry-front-{node}")
    mounted = harness.unwrap(front.inputs)["taskSpec"]["containerSpec"]["secrets"]
    (entry,) = [s for s in mounted if s["fileName"] == path]
    (secret,) = [r for r in declaration.of_type(SECRET) if r.plain_inputs["name"] == entry["secretName"]]
    assert isinstance(secret.inputs["data"], harness.SecretValue), f"{path} of {node} is not a secret"
    return base64.b64decode(secret.plain_inputs["data"]).decode()


def config_file(declaration: harness.Declaration, node: str, path: str) -> str:
    front = declaration.named(f"registry-front-{node}")
    mounted = harness.unwrap(front.inputs)["taskSpec"]["containerSpec"]["configs"]
    (entry,) = [c for c in mounted if c["fileName"] == path]
    (config,) = [r for r in declaration.of_type("docker:index/serviceConfig:ServiceConfig")
                 if r.plain_inputs["name"] == entry["configName"]]
    return base64.b64decode(config.plain_inputs["data"]).decode()


def test_only_the_first_node_orders(declared: harness.Declaration) -> None:
    orderer = front_config(declared, NODES[0])
    (policy,) = orderer["apps"]["tls"]["automation"]["policies"]
    assert policy["issuers"][0]["ca"] == STAGING
    for node in NODES[1:]:
        copy = front_config(declared, node)
        assert "automation" not in copy["apps"]["tls"], f"{node} would order certificates itself"
        assert copy["apps"]["tls"] == {"certificates": {"load_folders": [tls_share.COPY_DIR]}}
        assert copy["apps"]["http"]["servers"]["registry"]["automatic_https"] == {"disable": True}


def test_a_copy_forwards_challenges_to_the_orderer_and_redirects_the_rest(declared: harness.Declaration) -> None:
    for node in NODES[1:]:
        first, redirect = front_config(declared, node)["apps"]["http"]["servers"]["http_redirect"]["routes"]
        assert first["match"] == [{"path": ["/.well-known/acme-challenge/*"]}]
        assert first["handle"][0]["upstreams"] == [{"dial": "registry-stack-dev-front-node1:80"}]
        assert redirect["handle"][0]["status_code"] == 308
    orderer_routes = front_config(declared, NODES[0])["apps"]["http"]["servers"]["http_redirect"]["routes"]
    assert len(orderer_routes) == 1, "the orderer answers challenges itself (Caddy, before any route)"


def test_the_share_listener_checks_the_token_the_copies_send(declared: harness.Declaration) -> None:
    share = front_config(declared, NODES[0])["apps"]["http"]["servers"]["tls_share"]
    assert share["listen"] == [f":{tls_share.SHARE_PORT}"]
    (account,) = share["routes"][0]["handle"][0]["providers"]["http_basic"]["accounts"]
    for node in NODES[1:]:
        header = secret_file(declared, node, tls_share.AUTH_PATH)
        user, token = base64.b64decode(header.removeprefix("Basic ")).decode().split(":", 1)
        assert (user, account["username"]) == (tls_share.SHARE_USER, tls_share.SHARE_USER)
        assert bcrypt.checkpw(token.encode(), account["password"].encode())
        assert len(token) == 40
        assert token not in json.dumps(front_config(declared, NODES[0])), "the orderer holds only the hash"


def test_the_share_listener_answers_each_hostnames_chain_and_key(declared: harness.Declaration) -> None:
    share = front_config(declared, NODES[0])["apps"]["http"]["servers"]["tls_share"]
    paths = {route["match"][0]["path"][0]: route for route in share["routes"][1:-1]}
    hostnames = {"docker-build.dev.internal.network", "docker-cache.dev.internal.network"}
    assert set(paths) == {f"/tls/{h}" for h in hostnames}, paths.keys()
    body = paths["/tls/docker-build.dev.internal.network"]["handle"][1]["body"]
    folder = ("/data/caddy/certificates/acme-staging-v02.api.letsencrypt.org-directory/"
              "docker-build.dev.internal.network/docker-build.dev.internal.network")
    assert body == f'[[include "{folder}.crt"]][[include "{folder}.key"]]'
    assert share["routes"][-1]["handle"][0]["status_code"] == 404


def test_a_copy_runs_its_sync_loop_before_caddy(declared: harness.Declaration) -> None:
    for node in NODES[1:]:
        front = services(declared)[f"registry-stack-dev-front-{node}"]
        assert front["taskSpec"]["containerSpec"]["args"] == ["sh", tls_share.SCRIPT_PATH]
        script = config_file(declared, node, tls_share.SCRIPT_PATH)
        assert "http://127.0.0.1:8445/tls" in script
        assert script.rstrip().endswith("exec caddy run --config /etc/caddy/caddy.json")
        assert "caddy reload --config /etc/caddy/caddy.json --force" in script
    orderer = services(declared)["registry-stack-dev-front-node1"]["taskSpec"]["containerSpec"]
    assert orderer["args"] == ["caddy", "run", "--config", "/etc/caddy/caddy.json"]


def test_the_copy_script_is_valid_sh() -> None:
    declaration = declared_acme()
    script = config_file(declaration, NODES[1], tls_share.SCRIPT_PATH)
    result = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr


def test_every_front_publishes_port_80(declared: harness.Declaration) -> None:
    for node in NODES:
        ports = services(declared)[f"registry-stack-dev-front-{node}"]["endpointSpec"]["ports"]
        assert sorted((p["targetPort"], p["publishedPort"], p["publishMode"]) for p in ports) == [
            (80, 80, "host"), (443, 443, "host")]


def test_the_keys_cross_the_overlay_over_tls_the_copies_pin(declared: harness.Declaration) -> None:
    (cert,) = declared.of_type("tls:index/selfSignedCert:SelfSignedCert")
    assert cert.plain_inputs["dnsNames"] == ["registry-stack-dev-front-node1"]
    assert cert.plain_inputs["isCaCertificate"] is False
    pem = secret_file(declared, NODES[0], tls_share.SHARE_CERT_PATH)
    assert "BEGIN CERTIFICATE" in pem
    orderer = front_config(declared, NODES[0])
    assert orderer["apps"]["tls"]["certificates"] == {"load_files": [
        {"certificate": tls_share.SHARE_CERT_PATH, "key": tls_share.SHARE_KEY_PATH}]}
    share = orderer["apps"]["http"]["servers"]["tls_share"]
    assert share["tls_connection_policies"] == [{"match": {"sni": ["registry-stack-dev-front-node1"]}}]
    assert secret_file(declared, NODES[0], tls_share.SHARE_KEY_PATH).startswith("-----BEGIN")
    for node in NODES[1:]:
        assert secret_file(declared, node, tls_share.SHARE_CERT_PATH) == pem
        proxy = front_config(declared, node)["apps"]["http"]["servers"]["tls_share"]
        assert proxy["listen"] == ["127.0.0.1:8445"], "the plain side stays inside the container"
        (handler,) = proxy["routes"][0]["handle"]
        assert handler["upstreams"] == [{"dial": "registry-stack-dev-front-node1:8444"}]
        assert handler["transport"]["tls"] == {
            "ca": {"provider": "file", "pem_files": [tls_share.SHARE_CERT_PATH]},
            "server_name": "registry-stack-dev-front-node1"}
        front = declared.named(f"registry-front-{node}")
        secrets = harness.unwrap(front.inputs)["taskSpec"]["containerSpec"]["secrets"]
        assert tls_share.SHARE_KEY_PATH not in [s["fileName"] for s in secrets], "only the orderer has the key"


def test_self_signed_swarm_has_no_share() -> None:
    declaration = declare_swarm()
    assert not declaration.of_type("random:index/randomPassword:RandomPassword")
    front = json.loads(secret_file(declaration, NODES[1], "/etc/caddy/caddy.json"))
    assert "tls_share" not in front["apps"]["http"]["servers"]


def test_the_token_is_a_secret_in_state(declared: harness.Declaration) -> None:
    (token,) = declared.of_type("random:index/randomPassword:RandomPassword")
    assert token.plain_inputs["length"] == 40 and token.plain_inputs["special"] is False
    for node in NODES[1:]:
        header = secret_file(declared, node, tls_share.AUTH_PATH)
        assert header not in json.dumps(harness.unwrap(declared.outputs))


def test_the_orderer_trusts_a_private_acme_roots_file() -> None:
    root = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    declaration = declared_acme(acmeDirectoryUrl="https://pebble:14000/dir", acmeTrustedRootPem=root)
    assert config_file(declaration, NODES[0], "/etc/caddy/tls/acme-root.pem").strip() == root.strip()
    front = declaration.named(f"registry-front-{NODES[1]}")
    configs = harness.unwrap(front.inputs)["taskSpec"]["containerSpec"]["configs"]
    assert "/etc/caddy/tls/acme-root.pem" not in [c["fileName"] for c in configs]
