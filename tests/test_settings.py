"""The program's validation of config (no Pulumi runtime, no mocks).

Values are given as a stack file holds them, and reach the program as the Pulumi CLI
builds its config (tests/harness.py: defaults of Pulumi.yaml, the CLI's type check, text
with arrays as JSON, secret keys). Every ConfigError must name the key, show the bad value
(or **** for a secret, never the secret itself) and say what is allowed or how to fix it.
Values the CLI itself refuses never reach the program: CLI_REJECTED checks that they stop
at the CLI, with its message.
"""

from __future__ import annotations

import pytest

from components.settings import (
    ACME_DIRECTORIES,
    DOCKER_HUB_URL,
    TLS_LETSENCRYPT,
    TLS_LETSENCRYPT_STAGING,
    TLS_SELF_SIGNED,
    ConfigError,
    Secret,
    registry_major_version,
    settings_from_values,
)
from tests import harness

P = "registry-stack"
DIGEST = "sha256:" + "0123456789abcdef" * 4
USERS = ["alice:correct-horse-1", "bob:battery-staple-2"]
SECRETS = {"users", "upstreamCredentials"}


def users_list(*entries: str) -> list[str]:
    return list(entries)


def load(raw: dict, secret_keys=SECRETS, stack: str = "dev"):
    return harness.settings(raw, set(secret_keys) & set(raw), stack)


def with_users(**values) -> dict:
    """A valid config with the default switches (build on needs users)."""
    return {"users": users_list(*USERS), **values}


NO_BUILD = {"enableBuild": "false"}


# ---------------------------------------------------------------------------------------
# Rejected configs
# ---------------------------------------------------------------------------------------


def bad(case_id, raw, *contains, secret_keys=(), stack="dev", hidden=()):
    return pytest.param(raw, set(secret_keys), stack, contains, hidden, id=case_id)


BAD_CONFIGS = [
    # unknown keys (a typo must not be silently ignored)
    bad("unknown-key", {**NO_BUILD, "httpsport": "443"},
        f"{P}:httpsport", "unknown config key", f"pulumi config rm {P}:httpsport", "httpsPort"),
    # ports
    bad("port-zero", {**NO_BUILD, "httpsPort": "0"}, f"{P}:httpsPort='0'", "whole number from 1 to 65535"),
    bad("port-too-big", {**NO_BUILD, "httpsPort": "65536"}, f"{P}:httpsPort='65536'", "from 1 to 65535"),
    bad("port-negative", {**NO_BUILD, "httpPort": "-1"}, f"{P}:httpPort='-1'", "from 1 to 65535"),
    # domain
    bad("domain-one-label", {**NO_BUILD, "domain": "localhost"}, f"{P}:domain='localhost'", "DNS domain"),
    bad("domain-underscore", {**NO_BUILD, "domain": "dev_box.internal"}, f"{P}:domain='dev_box.internal'",
        "letters, digits and '-'"),
    bad("domain-leading-dash", {**NO_BUILD, "domain": "-dev.internal.network"},
        f"{P}:domain='-dev.internal.network'", "DNS domain"),
    bad("domain-space", {**NO_BUILD, "domain": "my domain.example"}, f"{P}:domain='my domain.example'",
        "DNS domain"),
    # images
    bad("image-uppercase", {**NO_BUILD, "registryImage": "Registry:2.8.3"},
        f"{P}:registryImage='Registry:2.8.3'", "image reference such as"),
    bad("image-empty-tag", {**NO_BUILD, "frontImage": "caddy:"}, f"{P}:frontImage='caddy:'", "image reference"),
    bad("image-short-digest", {**NO_BUILD, "registryImage": "registry:2.8.3@sha256:abc"},
        f"{P}:registryImage='registry:2.8.3@sha256:abc'", "image reference"),
    bad("image-space", {**NO_BUILD, "frontImage": "caddy 2.8.4"}, f"{P}:frontImage='caddy 2.8.4'",
        "image reference"),
    # dataPath / network
    bad("datapath-relative", {**NO_BUILD, "dataPath": "srv/registry"}, f"{P}:dataPath='srv/registry'",
        "absolute host path"),
    bad("datapath-colon", {**NO_BUILD, "dataPath": "/srv/registry:ro"}, f"{P}:dataPath='/srv/registry:ro'",
        "absolute host path"),
    bad("network-space", {**NO_BUILD, "network": "my network"}, f"{P}:network='my network'",
        "existing Docker network"),
    bad("network-leading-dash", {**NO_BUILD, "network": "-net"}, f"{P}:network='-net'", "Docker network"),
    # upstream
    bad("upstream-no-scheme", {**NO_BUILD, "upstreams": ["docker=registry-1.docker.io"]},
        f"{P}:upstreams[0]='docker=registry-1.docker.io'", "https:// or http://"),
    bad("upstream-host-port-no-scheme", {**NO_BUILD, "upstreams": ["m=mirror.example.com:5000"]},
        f"{P}:upstreams[0]='m=mirror.example.com:5000'", "https:// or http://"),
    bad("upstream-ftp", {**NO_BUILD, "upstreams": ["m=ftp://mirror.example.com"]},
        f"{P}:upstreams[0]='m=ftp://mirror.example.com'", "https:// or http://"),
    bad("upstream-with-path", {**NO_BUILD, "upstreams": ["ghcr=https://ghcr.io/v2"]},
        f"{P}:upstreams[0]='ghcr=https://ghcr.io/v2'", "drop the path"),
    bad("upstream-without-name", {**NO_BUILD, "upstreams": ["https://ghcr.io"]},
        f"{P}:upstreams[0]='https://ghcr.io'", "name=https://host"),
    bad("upstream-bad-name", {**NO_BUILD, "upstreams": ["GHCR_io=https://ghcr.io"]},
        f"{P}:upstreams[0]='GHCR_io=https://ghcr.io'", "lowercase"),
    bad("upstream-duplicate-name", {**NO_BUILD, "upstreams": ["a=https://ghcr.io", "a=https://quay.io"]},
        f"{P}:upstreams[1]", "'a' twice", "unique"),
    bad("upstream-duplicate-url", {**NO_BUILD, "upstreams": ["a=https://ghcr.io", "b=https://ghcr.io/"]},
        f"{P}:upstreams[1]", "https://ghcr.io", "'a'"),
    bad("upstream-unknown-option", {**NO_BUILD, "upstreams": ["a=https://ghcr.io;max=3"]},
        f"{P}:upstreams[0]", "'max'", "ttl"),
    bad("upstream-bad-ttl", {**NO_BUILD, "registryImage": "registry:3.0.0",
                             "upstreams": ["a=https://ghcr.io;ttl=week"]},
        f"{P}:upstreams[0]", "'week'", "168h"),
    bad("upstream-ttl-on-registry-2", {**NO_BUILD, "registryImage": "registry:2.8.3",
                                       "upstreams": ["a=https://ghcr.io;ttl=72h"]},
        f"{P}:upstreams[0]", "registry 2.x", "3.x"),
    bad("upstreams-empty", {**NO_BUILD, "upstreams": []}, f"{P}:upstreams is empty", "enableCache false"),
    bad("upstream-credentials-malformed", {**NO_BUILD, "upstreamCredentials": ["docker=robot"]},
        f"{P}:upstreamCredentials[0]=****", "name=username:password",
        secret_keys={"upstreamCredentials"}, hidden=("robot",)),
    bad("upstream-credentials-unknown-upstream",
        {**NO_BUILD, "upstreamCredentials": ["quay=robot:tok-XYZZY-4242"]},
        f"{P}:upstreamCredentials[0]", "'quay'", "docker",
        secret_keys={"upstreamCredentials"}, hidden=("tok-XYZZY-4242",)),
    bad("upstream-credentials-twice",
        {**NO_BUILD, "upstreamCredentials": ["docker=a:tok-XYZZY-4242", "docker=b:tok-XYZZY-4243"]},
        f"{P}:upstreamCredentials[1]", "twice", secret_keys={"upstreamCredentials"},
        hidden=("tok-XYZZY-4242", "tok-XYZZY-4243")),
    bad("upstream-credentials-plain-text",
        {**NO_BUILD, "upstreamCredentials": ["docker=robot:tok-XYZZY-4242"]},
        f"{P}:upstreamCredentials", "plain text", f"pulumi config set --secret --path '{P}:upstreamCredentials[0]'",
        hidden=("tok-XYZZY-4242",)),
    bad("unified-without-build", {**NO_BUILD, "unifiedEndpoint": "true"},
        f"{P}:unifiedEndpoint", f"{P}:enableBuild", "unifiedEndpoint false"),
    # users
    bad("users-plain-text", {"users": users_list("alice:hunter2hunter2")},
        f"{P}:users", "plain text", "--secret", hidden=("hunter2hunter2",)),
    bad("users-entry-without-colon", {"users": users_list("alicehunter2hunter2")},
        f"{P}:users[0]=****", "name:password", secret_keys={"users"}, hidden=("hunter2hunter2",)),
    bad("users-entry-bad-name", {"users": users_list("alice smith:hunter2hunter2")},
        f"{P}:users[0]=****", "letters, digits", secret_keys={"users"}, hidden=("hunter2hunter2",)),
    bad("users-second-entry-empty-name", {"users": users_list("alice:hunter2hunter2", ":hunter3hunter3")},
        f"{P}:users[1]=****", "name:password", secret_keys={"users"},
        hidden=("hunter2hunter2", "hunter3hunter3")),
    bad("users-short-password", {"users": users_list("alice:s3cr3t7")},
        f"{P}:users[0]", "'alice'", "shorter than 8", secret_keys={"users"}, hidden=("s3cr3t7",)),
    bad("users-duplicate", {"users": users_list("alice:hunter2hunter2", "alice:other-pass-9")},
        f"{P}:users", "'alice' twice", "one entry per user", secret_keys={"users"},
        hidden=("hunter2hunter2", "other-pass-9")),
    bad("build-without-users", {}, f"{P}:users is empty", f"{P}:enableBuild", "pulumi config set --secret"),
    bad("build-with-empty-users", {"enableBuild": "true", "users": []}, f"{P}:users is empty",
        f"set {P}:enableBuild false", secret_keys={"users"}),
    # TLS
    bad("tlsmode-unknown", {**NO_BUILD, "tlsMode": "acme"}, f"{P}:tlsMode='acme'",
        "self-signed, letsencrypt-staging, letsencrypt"),
    bad("acme-without-email", {**NO_BUILD, "tlsMode": "letsencrypt"}, f"{P}:acmeEmail is required",
        "tlsMode='letsencrypt'", f"pulumi config set {P}:acmeEmail"),
    bad("acme-staging-without-email", {**NO_BUILD, "tlsMode": "letsencrypt-staging"},
        f"{P}:acmeEmail is required", "tlsMode='letsencrypt-staging'"),
    bad("acme-email-bad", {**NO_BUILD, "tlsMode": "letsencrypt", "acmeEmail": "admins"},
        f"{P}:acmeEmail='admins'", "email address", "name@example.com"),
    bad("acme-directory-http", {**NO_BUILD, "acmeDirectoryUrl": "http://pebble:14000/dir"},
        f"{P}:acmeDirectoryUrl='http://pebble:14000/dir'", "https://"),
    bad("acme-directory-no-scheme", {**NO_BUILD, "acmeDirectoryUrl": "pebble:14000/dir"},
        f"{P}:acmeDirectoryUrl='pebble:14000/dir'", "https://"),
    bad("acme-root-not-pem", {**NO_BUILD, "acmeTrustedRootPem": "not a certificate"},
        f"{P}:acmeTrustedRootPem='not a certificate'", "PEM certificate"),
    bad("validity-too-short", {**NO_BUILD, "certValidityDays": "1"}, f"{P}:certValidityDays='1'", "from 2 to 3650"),
    bad("early-renewal-zero", {**NO_BUILD, "certEarlyRenewalDays": "0"}, f"{P}:certEarlyRenewalDays='0'",
        "from 1 to 3649"),
    bad("early-renewal-equals-validity", {**NO_BUILD, "certValidityDays": "30", "certEarlyRenewalDays": "30"},
        f"{P}:certEarlyRenewalDays=30", "certValidityDays=30", "must be smaller"),
    bad("early-renewal-exceeds-validity", {**NO_BUILD, "certEarlyRenewalDays": "400"},
        f"{P}:certEarlyRenewalDays=400", "certValidityDays=365", "must be smaller"),
    bad("acme-same-ports", {**NO_BUILD, "tlsMode": "letsencrypt", "acmeEmail": "ops@example.com",
                            "httpsPort": "80", "httpPort": "80"},
        f"{P}:httpsPort", f"{P}:httpPort", "both 80", "two different host ports"),
    bad("acme-same-ports-own-ca", {**NO_BUILD, "tlsMode": "letsencrypt", "acmeEmail": "ops@example.com",
                                   "acmeDirectoryUrl": "https://pebble:14000/dir",
                                   "httpsPort": "8443", "httpPort": "8443"},
        f"{P}:httpsPort", f"{P}:httpPort", "both 8443", "two different host ports"),
    bad("letsencrypt-http-port-not-80", {**NO_BUILD, "tlsMode": "letsencrypt", "acmeEmail": "ops@example.com",
                                         "httpPort": "8080"},
        f"{P}:httpPort=8080", "port 80 only", "set httpPort to 80"),
    # networks and addresses
    bad("cidr-prefix-too-long", {**NO_BUILD, "cacheClientNetworks": ["10.0.0.0/33"]},
        f"{P}:cacheClientNetworks='10.0.0.0/33'", "CIDR range"),
    bad("cidr-word", {**NO_BUILD, "cacheClientNetworks": ["10.0.0.0/8", "office"]},
        f"{P}:cacheClientNetworks='office'", "CIDR range"),
    bad("bind-hostname", {**NO_BUILD, "bindAddress": "localhost"}, f"{P}:bindAddress='localhost'", "IP address"),
    bad("bind-with-port", {**NO_BUILD, "bindAddress": "0.0.0.0:443"}, f"{P}:bindAddress='0.0.0.0:443'",
        "IP address"),
    bad("host-address-out-of-range", {**NO_BUILD, "hostAddress": "300.1.2.3"}, f"{P}:hostAddress='300.1.2.3'",
        "IP address"),
    # stack name
    bad("stack-underscore", NO_BUILD, "stack name 'dev_1'", "letters, digits and '-'", stack="dev_1"),
    bad("stack-leading-dash", NO_BUILD, "stack name '-dev'", "letters, digits and '-'", stack="-dev"),
    # values of keys the stack marked secret never show
    bad("secret-marked-plain-setting", {**NO_BUILD, "domain": "corp-hunter2.example.com"},
        f"{P}:domain", "not a secret setting", "without --secret",
        secret_keys={"domain"}, hidden=("corp-hunter2.example.com",)),
]


@pytest.mark.parametrize(("raw", "secret_keys", "stack", "contains", "hidden"), BAD_CONFIGS)
def test_bad_config_is_rejected_with_a_helpful_message(raw, secret_keys, stack, contains, hidden):
    with pytest.raises(ConfigError) as caught:
        harness.settings(raw, secret_keys, stack)
    message = str(caught.value)
    for fragment in contains:
        assert fragment in message, f"{fragment!r} missing from: {message}"
    for secret in hidden:
        assert secret not in message, f"secret text {secret!r} leaked into: {message}"


def cli_rejects(case_id, raw, key, cli_type, secret_keys=(), hidden=()):
    message = f"validating stack config: Stack 'dev' with configuration key '{key}' must be of type '{cli_type}'"
    return pytest.param(raw, set(secret_keys), "dev", message, hidden, id=case_id)


# Wrongly typed values: the CLI checks each value against Pulumi.yaml's type before the
# program starts (pulumi/pulumi ValidateConfigValue), so the user sees the CLI's message.
CLI_REJECTED = [
    cli_rejects("bool-yes", {"enableBuild": "yes"}, "enableBuild", "boolean"),
    cli_rejects("bool-1", {**NO_BUILD, "enableCache": "1"}, "enableCache", "boolean"),
    cli_rejects("bool-upper-case", {**NO_BUILD, "enableCache": "TRUE"}, "enableCache", "boolean"),
    cli_rejects("port-word", {**NO_BUILD, "httpsPort": "https"}, "httpsPort", "integer"),
    cli_rejects("port-fraction", {**NO_BUILD, "httpPort": "80.5"}, "httpPort", "integer"),
    cli_rejects("port-yaml-fraction", {**NO_BUILD, "httpPort": 80.5}, "httpPort", "integer"),
    cli_rejects("port-empty", {**NO_BUILD, "httpsPort": ""}, "httpsPort", "integer"),
    cli_rejects("upstream-not-a-list", {**NO_BUILD, "upstreams": {"a": "https://ghcr.io"}},
                "upstreams", "array<string>"),
    cli_rejects("upstreams-as-json-text", {**NO_BUILD, "upstreams": '["ghcr=https://ghcr.io"]'},
                "upstreams", "array<string>"),
    cli_rejects("upstream-entry-a-number", {**NO_BUILD, "upstreams": [5]}, "upstreams", "array<string>"),
    cli_rejects("users-not-a-list", {"users": "alice:hunter2hunter2"}, "users", "array<string>",
                secret_keys={"users"}, hidden=("hunter2hunter2",)),
    cli_rejects("cidr-not-a-list", {**NO_BUILD, "cacheClientNetworks": "10.0.0.0/8"},
                "cacheClientNetworks", "array<string>"),
    cli_rejects("domain-a-list", {**NO_BUILD, "domain": ["a.example"]}, "domain", "string"),
    cli_rejects("secret-marked-port", {**NO_BUILD, "httpsPort": "hunter2-port"}, "httpsPort", "integer",
                secret_keys={"httpsPort"}, hidden=("hunter2-port",)),
    cli_rejects("secret-marked-bool", {"enableBuild": "maybe-hunter2"}, "enableBuild", "boolean",
                secret_keys={"enableBuild"}, hidden=("maybe-hunter2",)),
]


@pytest.mark.parametrize(("raw", "secret_keys", "stack", "message", "hidden"), CLI_REJECTED)
def test_wrongly_typed_values_stop_at_the_cli(raw, secret_keys, stack, message, hidden):
    with pytest.raises(harness.CliError) as caught:
        harness.settings(raw, secret_keys, stack)
    assert str(caught.value) == message
    for secret in hidden:
        assert secret not in str(caught.value)


def test_an_empty_stack_name_stops_at_the_cli():
    with pytest.raises(harness.CliError, match="stack names may only contain"):
        harness.settings(NO_BUILD, stack="")


def test_there_are_many_distinct_bad_configs():
    ids = [param.id for param in BAD_CONFIGS]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 30


def test_plain_text_users_are_refused_even_when_build_is_off():
    # A password in plain text is a leak whether or not the build registry runs.
    with pytest.raises(ConfigError, match="plain text"):
        load({"enableBuild": "false", "users": users_list("alice:hunter2hunter2")}, secret_keys=())


def test_password_longer_than_bcrypt_limit_is_rejected_before_deploying():
    long_password = "x" * 73  # bcrypt uses at most 72 bytes of a password
    with pytest.raises(ConfigError) as caught:
        load({"users": users_list(f"alice:{long_password}")})
    assert f"{P}:users[0]" in str(caught.value)
    assert long_password not in str(caught.value)


# ---------------------------------------------------------------------------------------
# Accepted configs
# ---------------------------------------------------------------------------------------


def test_defaults():
    settings = load(with_users())
    assert settings.stack == "dev"
    assert settings.enable_build and settings.enable_cache
    assert settings.domain == "dev.internal.network"  # <stack>.internal.network
    # The cache mirrors Docker Hub, whose registry API lives on registry-1.docker.io.
    assert settings.upstream.url == DOCKER_HUB_URL == "https://registry-1.docker.io"
    assert settings.upstream.username == ""
    assert settings.upstream.password is None
    assert not settings.upstream.has_credentials
    # Pulumi.yaml documents these image defaults.
    assert settings.registry_image == "registry:3.1.1"
    assert settings.front_image == "caddy:2.11.4"
    assert settings.data_path == ""
    assert settings.external_network == ""
    assert settings.cache_client_networks == ()
    assert (settings.https_port, settings.http_port) == (443, 80)
    assert (settings.bind_address, settings.host_address) == ("0.0.0.0", "127.0.0.1")
    assert settings.tls.mode == TLS_SELF_SIGNED
    assert not settings.tls.is_acme
    assert settings.tls.acme_directory_url == ""
    assert (settings.tls.cert_validity_days, settings.tls.cert_early_renewal_days) == (365, 30)
    assert settings.prefix == "registry-stack-dev"


@pytest.mark.parametrize(("stack", "domain"), [("dev", "dev.internal.network"), ("qa-2", "qa-2.internal.network"),
                                               ("Stage", "stage.internal.network")])
def test_domain_defaults_to_the_stack_name(stack, domain):
    settings = load(NO_BUILD, stack=stack)
    assert settings.domain == domain
    assert settings.stack == stack.lower()
    assert settings.cache_hostname == f"docker-cache.{domain}"


def test_values_of_other_types_and_none_are_accepted():
    # Typed values (as component arguments pass them) and None (= unset).
    settings = settings_from_values(
        {"enableBuild": False, "enableCache": True, "httpsPort": 8443, "domain": None}, "dev"
    )
    assert (settings.enable_build, settings.enable_cache, settings.https_port) == (False, True, 8443)
    assert settings.domain == "dev.internal.network"


@pytest.mark.parametrize(
    ("build", "cache", "hostnames"),
    [
        (True, True, ("docker-build.dev.internal.network", "docker-cache.dev.internal.network")),
        (True, False, ("docker-build.dev.internal.network",)),
        (False, True, ("docker-cache.dev.internal.network",)),
        (False, False, ()),
    ],
)
def test_switch_combinations(build, cache, hostnames):
    raw = {"enableBuild": str(build).lower(), "enableCache": cache}  # "true" text or a YAML boolean
    if build:
        raw["users"] = users_list(*USERS)
    settings = load(raw)
    assert (settings.enable_build, settings.enable_cache) == (build, cache)
    assert settings.hostnames == hostnames
    assert settings.any_registry == (build or cache)


def test_users_without_build_need_no_users_but_may_keep_them():
    assert load(NO_BUILD).users == ()
    kept = load({**NO_BUILD, "users": users_list(*USERS)})
    assert [name for name, _ in kept.users] == ["alice", "bob"]


def test_users_are_parsed_sorted_and_kept_secret():
    settings = load({"users": users_list("zoe:pa:ss:word-1", "alice:correct-horse-1")})
    assert [name for name, _ in settings.users] == ["alice", "zoe"]  # stable order whatever the input order
    passwords = dict(settings.users)
    assert all(isinstance(p, Secret) for p in passwords.values())
    assert passwords["zoe"].reveal() == "pa:ss:word-1"  # only the first ':' separates name and password
    assert "pa:ss:word-1" not in repr(settings)


def test_normalisation():
    settings = load({
        **NO_BUILD,
        "domain": "Corp.Example.COM.",
        "upstreams": ["ghcr=https://ghcr.io/"],
        "dataPath": "/srv/registry/",
        "cacheClientNetworks": ["10.1.2.3/8", "192.168.7.0/24", "fd00::/8"],
        "registryImage": " registry:3.0.0 ",
    })
    assert settings.domain == "corp.example.com"
    assert settings.build_hostname == "docker-build.corp.example.com"
    assert settings.upstream.url == "https://ghcr.io"
    assert settings.cache_hostname == "ghcr-cache.corp.example.com"
    assert settings.docker_hub_cache is None
    assert settings.data_path == "/srv/registry"
    assert settings.cache_client_networks == ("10.0.0.0/8", "192.168.7.0/24", "fd00::/8")
    assert settings.registry_image == "registry:3.0.0"


def test_upstream_credentials():
    settings = load({**NO_BUILD, "upstreams": ["docker=http://mirror.internal:5000"],
                     "upstreamCredentials": ["docker=robot:tok-XYZZY-4242"]})
    assert settings.upstream.url == "http://mirror.internal:5000"
    assert settings.upstream.has_credentials
    assert settings.upstream.username == "robot"
    assert settings.upstream.password.reveal() == "tok-XYZZY-4242"
    assert "tok-XYZZY-4242" not in repr(settings)


def test_empty_upstream_credentials_mean_anonymous():
    settings = load({**NO_BUILD, "upstreamCredentials": []})
    assert not settings.upstream.has_credentials


@pytest.mark.parametrize("mode", [TLS_LETSENCRYPT_STAGING, TLS_LETSENCRYPT])
def test_acme_modes_default_to_the_lets_encrypt_directory_of_the_mode(mode):
    settings = load({**NO_BUILD, "tlsMode": mode, "acmeEmail": "ops@example.com"})
    assert settings.tls.is_acme
    assert settings.tls.acme_email == "ops@example.com"
    assert settings.tls.acme_directory_url == ACME_DIRECTORIES[mode]
    assert settings.tls.acme_directory_url.startswith("https://acme-")
    assert ("staging" in settings.tls.acme_directory_url) == (mode == TLS_LETSENCRYPT_STAGING)


def test_own_acme_directory_wins_and_may_use_another_http_port():
    settings = load({**NO_BUILD, "tlsMode": "letsencrypt", "acmeEmail": "ops@example.com",
                     "acmeDirectoryUrl": "https://pebble:14000/dir/", "httpPort": "8080"})
    assert settings.tls.acme_directory_url == "https://pebble:14000/dir"
    assert settings.http_port == 8080


def test_self_signed_may_share_the_http_port_number():
    # httpPort is not published in self-signed mode, so it cannot clash.
    settings = load({**NO_BUILD, "httpsPort": "80", "httpPort": "80"})
    assert settings.https_port == settings.http_port == 80


def test_acme_trusted_root_pem_is_kept():
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    settings = load({**NO_BUILD, "tlsMode": "letsencrypt", "acmeEmail": "ops@example.com",
                     "acmeDirectoryUrl": "https://pebble:14000/dir", "acmeTrustedRootPem": pem})
    assert settings.tls.acme_trusted_root_pem.startswith("-----BEGIN CERTIFICATE-----")


def test_renewal_window_just_below_validity_is_accepted():
    settings = load({**NO_BUILD, "certValidityDays": "30", "certEarlyRenewalDays": "29"})
    assert (settings.tls.cert_validity_days, settings.tls.cert_early_renewal_days) == (30, 29)


# ---------------------------------------------------------------------------------------
# registry_major_version
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "major"),
    [
        ("registry:2.8.3", 2),
        ("registry:3.0.0", 3),
        (f"registry:3.0.0@{DIGEST}", 3),  # the tag wins over the digest
        ("localhost:5000/registry:3.0.1", 3),  # a registry port is not a tag
        ("ghcr.io/distribution/distribution:v3.0.0", 3),
        ("registry:2", 2),
    ],
)
def test_registry_major_version(image, major):
    assert registry_major_version(image) == major
    settings = load({**NO_BUILD, "registryImage": image})
    assert settings.registry_image == image
    assert settings.registry_major_version == major


@pytest.mark.parametrize(
    "image", [f"registry@{DIGEST}", "localhost:5000/registry", "registry:latest", "registry"]
)
def test_registry_image_without_a_version_tag_is_refused(image):
    # 2.x and 3.x read their config from different paths; registry:latest is 3.x today,
    # so guessing would upload the config where the registry never reads it.
    with pytest.raises(ConfigError) as caught:
        load({**NO_BUILD, "registryImage": image})
    assert f"{P}:registryImage={image!r}" in str(caught.value)
    assert "version tag" in str(caught.value)


# ---------------------------------------------------------------------------------------
# Secret and URLs
# ---------------------------------------------------------------------------------------


def test_secret_never_shows_its_value():
    secret = Secret("hunter2-sekrit")
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret]), repr({"k": secret})):
        assert "hunter2-sekrit" not in shown
        assert "****" in shown
    assert secret.reveal() == "hunter2-sekrit"
    assert secret == Secret("hunter2-sekrit")
    assert secret != Secret("other")
    assert secret != "hunter2-sekrit"  # never equal to the plain text
    assert len({secret, Secret("hunter2-sekrit")}) == 1


def test_settings_repr_never_shows_any_password():
    settings = load({"users": users_list(*USERS), "upstreamCredentials": ["docker=robot:tok-XYZZY-4242"]})
    shown = repr(settings)
    for text in ("correct-horse-1", "battery-staple-2", "tok-XYZZY-4242"):
        assert text not in shown


def test_several_upstreams_get_a_cache_and_hostname_each():
    settings = load(with_users(
        registryImage="registry:3.0.0",
        upstreams=["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io;ttl=72h"],
        upstreamCredentials=["ghcr=robot:tok-XYZZY-4242"],
        unifiedEndpoint="true",
    ))
    docker_hub, ghcr = settings.upstreams
    assert (docker_hub.role, ghcr.role) == ("cache", "ghcr-cache")
    assert (docker_hub.standby_role, ghcr.standby_role) == ("cache-standby", "ghcr-cache-standby")
    assert ghcr.ttl == "72h" and ghcr.username == "robot" and ghcr.password.reveal() == "tok-XYZZY-4242"
    assert not docker_hub.has_credentials
    assert settings.docker_hub_cache == docker_hub
    assert settings.hostnames == (
        "docker-build.dev.internal.network",
        "docker-cache.dev.internal.network",
        "ghcr-cache.dev.internal.network",
        "registry.dev.internal.network",
    )


def test_cache_off_means_no_caches_even_with_upstreams():
    settings = load(with_users(enableCache="false", upstreams=["ghcr=https://ghcr.io"]))
    assert settings.caches == ()
    assert settings.docker_hub_cache is None
    assert settings.hostnames == ("docker-build.dev.internal.network",)


def test_url_for_omits_the_default_https_port():
    default = load(NO_BUILD)
    assert default.url_for(default.cache_hostname) == "https://docker-cache.dev.internal.network"
    assert default.registry_address(default.cache_hostname) == "docker-cache.dev.internal.network"
    other = load({**NO_BUILD, "httpsPort": "8443"})
    assert other.url_for(other.cache_hostname) == "https://docker-cache.dev.internal.network:8443"
    assert other.registry_address(other.cache_hostname) == "docker-cache.dev.internal.network:8443"


# ---------------------------------------------------------------------------------------
# Container hostnames: registry-stack-<stack>-<role> must fit in one DNS label (63 characters)
# ---------------------------------------------------------------------------------------


def test_longest_names_that_fit_are_accepted():
    # 15 ("registry-stack-") + 34 + 14 ("-cache-standby") = 63
    settings = load(NO_BUILD, stack="s" * 34)
    assert max(len(f"{settings.prefix}-{u.standby_role}") for u in settings.caches) == 63
    name = "u" * 30  # registry-stack-dev- (19) + 30 + -cache-standby (14) = 63
    settings = load({**NO_BUILD, "upstreams": [f"{name}=https://ghcr.io"]})
    assert len(f"{settings.prefix}-{settings.upstreams[0].standby_role}") == 63


def test_a_stack_name_that_makes_a_hostname_too_long_is_refused():
    with pytest.raises(ConfigError) as caught:
        load(NO_BUILD, stack="s" * 35)
    message = str(caught.value)
    assert f"stack name {'s' * 35!r}" in message and "64 characters" in message
    assert "more than the 63" in message and "at most 34 characters" in message


def test_an_upstream_name_that_makes_a_hostname_too_long_is_refused_by_its_entry():
    long_name = "u" * 31
    with pytest.raises(ConfigError) as caught:
        load({**NO_BUILD, "upstreams": ["docker=https://registry-1.docker.io", f"{long_name}=https://ghcr.io"]})
    message = str(caught.value)
    assert f"{P}:upstreams[1]" in message and repr(long_name) in message
    assert f"'registry-stack-dev-{long_name}-cache-standby'" in message and "64 characters" in message
    assert "at most 30 characters" in message


def test_hostname_length_counts_only_containers_that_exist():
    # With the cache off there is no standby container: only build and front count.
    settings = load({"enableCache": False, "users": USERS}, stack="s" * 40)
    assert settings.caches == ()
