"""Every tlsMode under every enableBuild/enableCache combination, declared under mocks.

What each mode must declare:
- self-signed: the Tls component's CA, leaf key, request and locally signed leaf; the
  front gets the leaf and its key as (secret) uploads and publishes HTTPS only.
- letsencrypt-staging / letsencrypt: no tls resources and no key anywhere in the program
  (the front orders its certificates itself); the front publishes port 80 for HTTP-01 and
  its Caddy config names the mode's ACME directory (or the override) and the email.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest

from components import renderers
from components.tls import CA_VALIDITY_HOURS
from tests.harness import Declaration, DeclaredResource, SecretValue, declare

P = "registry-stack"
STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
PRIVATE_CA = "https://ca.internal.network:9000/acme/acme/directory"
EMAIL = "registry-admins@example.com"
ROOT_PEM = "-----BEGIN CERTIFICATE-----\nMIIBprivateacmeroot\n-----END CERTIFICATE-----\n"
HTTPS_PORT = 8443
HTTP_PORT = 80

MODES = ("self-signed", "letsencrypt-staging", "letsencrypt")
ACME_MODES = ("letsencrypt-staging", "letsencrypt")
SWITCHES = [(True, True), (True, False), (False, True), (False, False)]
MATRIX = [pytest.param(m, b, c, id=f"{m}-build={b}-cache={c}") for m in MODES for b, c in SWITCHES]
RUNNING = [p for p in MATRIX if p.values[1] or p.values[2]]
TLS_TYPES = {
    "tls:index/privateKey:PrivateKey",
    "tls:index/selfSignedCert:SelfSignedCert",
    "tls:index/certRequest:CertRequest",
    "tls:index/locallySignedCert:LocallySignedCert",
}


def config_for(mode: str, build: bool, cache: bool, **extra: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    values: dict[str, Any] = {
        "tlsMode": mode, "enableBuild": build, "enableCache": cache,
        "httpsPort": HTTPS_PORT, "httpPort": HTTP_PORT, "certValidityDays": 90, "certEarlyRenewalDays": 20,
    }
    if mode in ACME_MODES:
        values["acmeEmail"] = EMAIL
    values.update(extra)
    if build:
        values["users"] = ["ci:Ci-Pa55word-7f3a"]
        return values, ("users",)
    return values, ()


@cache
def declared(mode: str, build: bool, cache: bool) -> Declaration:
    values, secrets = config_for(mode, build, cache)
    return declare(values, secret_keys=secrets, stack="dev")


def front_of(declaration: Declaration) -> DeclaredResource:
    return declaration.containers["registry-stack-dev-front"]


def uploads(front: DeclaredResource) -> dict[str, str]:
    return {u["file"]: u["content"] for u in front.plain_inputs["uploads"]}


def caddy_config(front: DeclaredResource) -> dict[str, Any]:
    return json.loads(uploads(front)[renderers.FRONT_CONFIG_PATH])


def published(front: DeclaredResource) -> set[tuple[int, int]]:
    return {(int(p["internal"]), int(p["external"])) for p in front.plain_inputs["ports"]}


def tls_resources(declaration: Declaration) -> list[DeclaredResource]:
    return [r for r in declaration.resources if r.type.startswith("tls:")]


def acme_issuer(config: dict[str, Any]) -> dict[str, Any]:
    (policy,) = config["apps"]["tls"]["automation"]["policies"]
    (issuer,) = policy["issuers"]
    return issuer


# ---------------------------------------------------------------------------------------
# The matrix
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "build", "cache"), MATRIX)
def test_tls_resources_exist_only_in_self_signed_mode_with_a_registry(mode, build, cache):
    declaration = declared(mode, build, cache)
    types = {r.type for r in tls_resources(declaration)}
    if mode == "self-signed" and (build or cache):
        assert types == TLS_TYPES
        assert len(declaration.of_type("tls:index/privateKey:PrivateKey")) == 2  # CA key and leaf key
        assert declaration.outputs["caCertPem"] is not None
    else:
        assert types == set()
        assert declaration.outputs["caCertPem"] is None
    if not (build or cache):
        assert declaration.containers == {}


@pytest.mark.parametrize(("mode", "build", "cache"), [p for p in RUNNING if p.values[0] == "self-signed"])
def test_self_signed_front_loads_the_leaf_and_its_secret_key_and_publishes_https_only(mode, build, cache):
    declaration = declared(mode, build, cache)
    front = front_of(declaration)
    files = uploads(front)
    assert set(files) == {renderers.FRONT_CONFIG_PATH, renderers.FRONT_CERT_PATH, renderers.FRONT_KEY_PATH}
    assert "PRIVATE KEY" in files[renderers.FRONT_KEY_PATH]
    assert isinstance(front.inputs["uploads"], SecretValue)
    assert published(front) == {(443, HTTPS_PORT)}
    config = caddy_config(front)
    assert "acme" not in json.dumps(config)
    assert list(config["apps"]["http"]["servers"]) == ["registry"]


@pytest.mark.parametrize(("mode", "build", "cache"), [p for p in RUNNING if p.values[0] == "self-signed"])
def test_self_signed_leaf_covers_the_hostnames_and_renews_early_while_the_ca_lives_long(mode, build, cache):
    declaration = declared(mode, build, cache)
    (request,) = declaration.of_type("tls:index/certRequest:CertRequest")
    assert request.plain_inputs["dnsNames"] == list(declaration.outputs["hostnames"])
    (leaf,) = declaration.of_type("tls:index/locallySignedCert:LocallySignedCert")
    assert leaf.plain_inputs["validityPeriodHours"] == 90 * 24
    assert leaf.plain_inputs["earlyRenewalHours"] == 20 * 24
    (ca,) = declaration.of_type("tls:index/selfSignedCert:SelfSignedCert")
    assert ca.plain_inputs["isCaCertificate"] is True
    assert ca.plain_inputs["validityPeriodHours"] == CA_VALIDITY_HOURS >= 5 * 365 * 24


@pytest.mark.parametrize(("mode", "build", "cache"), [p for p in RUNNING if p.values[0] in ACME_MODES])
def test_acme_front_holds_no_key_publishes_port_80_and_orders_from_the_mode_directory(mode, build, cache):
    declaration = declared(mode, build, cache)
    front = front_of(declaration)
    assert set(uploads(front)) == {renderers.FRONT_CONFIG_PATH}  # no certificate, no key
    assert published(front) == {(443, HTTPS_PORT), (80, HTTP_PORT)}
    config = caddy_config(front)
    issuer = acme_issuer(config)
    assert issuer["module"] == "acme"
    assert issuer["ca"] == (STAGING if mode == "letsencrypt-staging" else PRODUCTION)
    assert issuer["email"] == EMAIL
    assert "trusted_roots_pem_files" not in issuer
    (policy,) = config["apps"]["tls"]["automation"]["policies"]
    assert policy["subjects"] == list(declaration.outputs["hostnames"])
    assert config["storage"]["root"].startswith(renderers.FRONT_DATA_DIR + "/")


@pytest.mark.parametrize(("mode", "build", "cache"), [p for p in RUNNING if p.values[0] in ACME_MODES])
def test_acme_state_lives_on_a_volume_mounted_at_the_storage_root(mode, build, cache):
    declaration = declared(mode, build, cache)
    front = front_of(declaration)
    volume, *registry_views = front.plain_inputs["volumes"]
    assert volume["containerPath"] == renderers.FRONT_DATA_DIR
    assert all(view["readOnly"] for view in registry_views)  # the registries' storage, read-only
    # A volume of its own, not the container's writable layer: replacing the container
    # keeps the ACME account and certificates (tests/e2e/test_acme.py proves it).
    names = {v.plain_inputs["name"] for v in declaration.of_type("docker:index/volume:Volume")}
    assert volume["volumeName"] == "registry-stack-dev-front-data" in names


@pytest.mark.parametrize(("mode", "build", "cache"), [p for p in RUNNING if p.values[0] in ACME_MODES])
def test_acme_plain_http_redirects_to_the_published_https_port(mode, build, cache):
    config = caddy_config(front_of(declared(mode, build, cache)))
    servers = config["apps"]["http"]["servers"]
    assert servers["registry"]["listen"] == [":443"]
    assert servers["registry"]["automatic_https"] == {"disable_redirects": True}  # certificates stay automatic
    (route,) = servers["http_redirect"]["routes"]
    (redirect,) = route["handle"]
    assert servers["http_redirect"]["listen"] == [":80"]
    assert redirect["status_code"] == 308
    assert redirect["headers"]["Location"] == [f"https://{{http.request.host}}:{HTTPS_PORT}{{http.request.uri}}"]


@pytest.mark.parametrize("mode", ACME_MODES)
def test_acme_redirect_leaves_out_the_default_https_port(mode):
    values, secrets = config_for(mode, False, True, httpsPort=443)
    config = caddy_config(front_of(declare(values, secret_keys=secrets, stack="dev")))
    (route,) = config["apps"]["http"]["servers"]["http_redirect"]["routes"]
    assert route["handle"][0]["headers"]["Location"] == ["https://{http.request.host}{http.request.uri}"]


@pytest.mark.parametrize("mode", ACME_MODES)
def test_acme_directory_override_and_trusted_root_reach_the_front(mode):
    values, secrets = config_for(mode, True, True, acmeDirectoryUrl=PRIVATE_CA, acmeTrustedRootPem=ROOT_PEM)
    declaration = declare(values, secret_keys=secrets, stack="dev")
    front = front_of(declaration)
    issuer = acme_issuer(caddy_config(front))
    assert issuer["ca"] == PRIVATE_CA
    assert issuer["trusted_roots_pem_files"] == [renderers.FRONT_ACME_ROOT_PATH]
    assert uploads(front)[renderers.FRONT_ACME_ROOT_PATH].strip() == ROOT_PEM.strip()
    assert tls_resources(declaration) == []


def test_a_private_acme_ca_may_validate_on_another_http_port():
    values, secrets = config_for("letsencrypt", False, True, acmeDirectoryUrl=PRIVATE_CA, httpPort=8080)
    front = front_of(declare(values, secret_keys=secrets, stack="dev"))
    assert published(front) == {(443, HTTPS_PORT), (80, 8080)}


# ---------------------------------------------------------------------------------------
# Validation: each error names the key
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        pytest.param({"tlsMode": "acme"}, [f"{P}:tlsMode='acme'", "self-signed, letsencrypt-staging, letsencrypt"],
                     id="unknown-mode"),
        pytest.param({"tlsMode": "letsencrypt"}, [f"{P}:acmeEmail is required", "tlsMode='letsencrypt'"],
                     id="production-without-email"),
        pytest.param({"tlsMode": "letsencrypt-staging"}, [f"{P}:acmeEmail is required"],
                     id="staging-without-email"),
        pytest.param({"tlsMode": "letsencrypt", "acmeEmail": "admins"}, [f"{P}:acmeEmail='admins'"],
                     id="email-without-domain"),
        pytest.param({"tlsMode": "letsencrypt", "acmeEmail": EMAIL, "acmeDirectoryUrl": "http://ca:9000/dir"},
                     [f"{P}:acmeDirectoryUrl='http://ca:9000/dir'", "https://"], id="directory-not-https"),
        pytest.param({"tlsMode": "letsencrypt", "acmeEmail": EMAIL, "acmeDirectoryUrl": "ca.internal/dir"},
                     [f"{P}:acmeDirectoryUrl="], id="directory-not-a-url"),
        pytest.param({"tlsMode": "letsencrypt", "acmeEmail": EMAIL, "acmeTrustedRootPem": "not a pem"},
                     [f"{P}:acmeTrustedRootPem="], id="trusted-root-not-pem"),
        pytest.param({"tlsMode": "letsencrypt", "acmeEmail": EMAIL, "httpPort": 8080},
                     [f"{P}:httpPort=8080", "port 80"], id="letsencrypt-on-another-http-port"),
        pytest.param({"tlsMode": "letsencrypt", "acmeEmail": EMAIL, "httpPort": 8443},
                     [f"{P}:httpsPort and {P}:httpPort"], id="same-ports"),
    ],
)
def test_bad_tls_config_fails_naming_the_key(extra, fragments):
    values = {"enableBuild": False, "httpsPort": 8443, **extra}
    with pytest.raises(Exception) as caught:  # Pulumi may wrap the ConfigError
        declare(values, stack="dev")
    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize("mode", ACME_MODES)
def test_acme_email_is_not_needed_in_self_signed_mode_but_is_in_acme_modes(mode):
    declare({"enableBuild": False, "tlsMode": "self-signed"}, stack="dev")
    with pytest.raises(Exception, match=f"{P}:acmeEmail is required"):
        declare({"enableBuild": False, "tlsMode": mode}, stack="dev")
