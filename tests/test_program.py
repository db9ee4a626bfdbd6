"""__main__.py run under Pulumi mocks (tests/harness.py): what each stack declares."""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from components import herd, renderers
from tests import harness
from tests.harness import Declaration, DeclaredResource, SecretValue, declare, unwrap

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "registry-stack"
STACKS = ("dev", "stage", "prod")
COMBOS = [(True, True), (True, False), (False, True), (False, False)]
USER_PASSWORD = harness.MATRIX_USER_PASSWORD
UPSTREAM_PASSWORD = "upstream-token-9c1e"
ROOT_PEM = "-----BEGIN CERTIFICATE-----\nMIIBpebbleroot\n-----END CERTIFICATE-----\n"

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
NETWORK = "docker:index/network:Network"
COMPONENT = "registry-stack:index:RegistryStack"
TLS_COMPONENT = "registry-stack:index:Tls"


stack_file_config = harness.stack_file_config
matrix_config = harness.matrix_config


@cache
def declared(stack: str, build: bool, cache: bool) -> Declaration:
    values, secrets = matrix_config(stack, build, cache)
    return declare(values, secret_keys=secrets, stack=stack)


def is_acme(stack: str) -> bool:
    return str(stack_file_config(stack).get("tlsMode", "self-signed")).startswith("letsencrypt")


def upload(container: DeclaredResource, path: str) -> str:
    files = {u["file"]: u["content"] for u in container.plain_inputs["uploads"]}
    assert path in files, f"{container.name} uploads {sorted(files)}, not {path}"
    return files[path]


MATRIX = [pytest.param(s, b, c, id=f"{s}-build={b}-cache={c}") for s in STACKS for b, c in COMBOS]
RUNNING = [p for p in MATRIX if p.values[1] or p.values[2]]


# ---------------------------------------------------------------------------------------
# Which objects exist
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("stack", "build", "cache"), MATRIX)
def test_containers_follow_the_switches(stack, build, cache):
    declaration = declared(stack, build, cache)
    roles = [r for r, on in (("build", build), ("cache", cache), ("front", build or cache)) if on]
    # The cache comes with its standby, its herd tier (Varnish: one upstream fetch per blob
    # under a herd) and the agent (which explains what the caches cannot serve and counts what
    # they do); a stack that runs anything ends with its verification.
    containers = roles + (["cache-standby", "cache-herd", "agent"] if cache else []) + (["verify"] if roles else [])
    assert set(declaration.containers) == {f"registry-stack-{stack}-{role}" for role in containers}
    assert len(declaration.of_type(CONTAINER)) == len(containers)
    volumes = {r.plain_inputs["name"] for r in declaration.of_type(VOLUME)}
    assert volumes == {f"registry-stack-{stack}-{role}-data" for role in roles}


@pytest.mark.parametrize("stack", STACKS)
def test_neither_switch_declares_nothing_and_says_so(stack):
    declaration = declared(stack, False, False)
    assert [r.type for r in declaration.resources] == [COMPONENT]
    assert not declaration.of_type(CONTAINER)
    assert not declaration.of_type(VOLUME)
    assert not declaration.of_type(NETWORK)
    info = [line for line in declaration.logs if line.startswith("info:")]
    assert any("enableBuild" in line and "enableCache" in line for line in info), declaration.logs
    outputs = declaration.outputs
    assert (outputs["buildUrl"], outputs["cacheUrl"], outputs["hostnames"]) == ("", "", [])
    assert outputs["caCertPem"] is None
    assert json.loads(outputs["daemonJson"]) == {}


@pytest.mark.parametrize(("stack", "build", "cache"), RUNNING)
def test_every_container_is_robust(stack, build, cache):
    declaration = declared(stack, build, cache)
    (network,) = declaration.of_type(NETWORK)
    network_name = network.plain_inputs["name"]
    assert network_name == f"registry-stack-{stack}"
    for name, container in declaration.containers.items():
        inputs = container.plain_inputs
        if inputs.get("attach"):
            continue  # the verification runs to completion: tests/test_verification.py
        assert inputs["restart"] == "unless-stopped", name
        check = inputs["healthcheck"]
        assert check["tests"][0] in ("CMD", "CMD-SHELL") and len(check["tests"]) > 1, name
        assert check["interval"] and check["retries"] >= 1, name
        (attachment,) = inputs["networksAdvanced"]
        assert attachment["name"] == network_name, name
        assert name in attachment["aliases"], f"{name} must be reachable by its own name"
        assert container.options["deleteBeforeReplace"] is True, name
        assert "healthcheck" in container.options["replaceOnChanges"], name
        assert inputs["image"].startswith("sha256:"), f"{name} must use the pulled image id"


@pytest.mark.parametrize(("stack", "build", "cache"), RUNNING)
def test_registries_upload_their_config_at_the_image_path(stack, build, cache):
    declaration = declared(stack, build, cache)
    # The stack files keep the default image registry:3.1.1, which reads the 3.x path.
    path = "/etc/distribution/config.yml"
    for role, on in (("build", build), ("cache", cache), ("cache-standby", cache)):
        if not on:
            continue
        container = declaration.containers[f"registry-stack-{stack}-{role}"]
        assert [u["file"] for u in container.plain_inputs["uploads"]] == [path]
        config = json.loads(upload(container, path))
        if role == "cache":
            assert config["proxy"] == {"remoteurl": "https://registry-1.docker.io"}
        else:
            assert "proxy" not in config
        read_only = config["storage"].get("maintenance", {}).get("readonly", {}).get("enabled", False)
        assert read_only == (role == "cache-standby"), role
        # The health check, the front and the data volume agree with the rendered config.
        port = config["http"]["addr"].rsplit(":", 1)[1]
        assert f"127.0.0.1:{port}/" in " ".join(container.plain_inputs["healthcheck"]["tests"])
        (volume,) = container.plain_inputs["volumes"]
        assert volume["containerPath"] == config["storage"]["filesystem"]["rootdirectory"]
        # The standby serves the cache's own storage.
        assert volume["volumeName"] == f"registry-stack-{stack}-{role.removesuffix('-standby')}-data"


@pytest.mark.parametrize(("stack", "build", "cache"), RUNNING)
def test_front_publishes_https_and_http_only_for_acme(stack, build, cache):
    declaration = declared(stack, build, cache)
    front = declaration.containers[f"registry-stack-{stack}-front"]
    ports = {(p["internal"], p["external"], p.get("ip")) for p in front.plain_inputs["ports"]}
    expected = {(443, 443, "0.0.0.0")}
    if is_acme(stack):
        expected.add((80, 80, "0.0.0.0"))  # HTTP-01 challenges
    assert ports == expected


@pytest.mark.parametrize(("stack", "build", "cache"), RUNNING)
def test_front_config_matches_the_declared_containers(stack, build, cache):
    declaration = declared(stack, build, cache)
    containers = declaration.containers
    front = containers[f"registry-stack-{stack}-front"]
    inputs = front.plain_inputs
    config_path = inputs["command"][inputs["command"].index("--config") + 1]
    config = json.loads(upload(front, config_path))
    servers = list(config["apps"]["http"]["servers"].values())
    # Every port the front listens on is published, and nothing else is.
    published = {p["internal"] for p in inputs["ports"]}
    assert {int(a.rsplit(":", 1)[1]) for srv in servers for a in srv["listen"]} == published
    if is_acme(stack):
        assert config["apps"]["http"]["http_port"] in published
    # Every upstream the front dials is a registry container's network alias.
    aliases = {
        alias: name for name, c in containers.items() for alias in c.plain_inputs["networksAdvanced"][0]["aliases"]
    }
    dialled = [u["dial"] for srv in servers for r in srv["routes"] for h in r["handle"] if h["handler"] == "subroute"
               for sub in h["routes"] for hh in sub["handle"] if hh["handler"] == "reverse_proxy"
               for u in hh["upstreams"]]
    assert len(dialled) == int(build) + 2 * int(cache)  # the cache host dials the cache and its standby
    assert len(set(dialled)) == len(dialled)
    for dial in dialled:
        host, port = dial.rsplit(":", 1)
        assert host in aliases and aliases[host] != front.plain_inputs["name"], dial
        uploads = {u["file"]: u["content"] for u in containers[aliases[host]].plain_inputs["uploads"]}
        if host.endswith("-herd"):  # the herd tier listens on its port and dials the cache
            assert f"-a :{port}" in uploads[herd.HERD_SCRIPT_PATH]
            assert f'"registry-stack-{stack}-cache"' in uploads[herd.HERD_VCL_PATH]
            continue
        registry_config = json.loads(next(iter(uploads.values())))
        assert registry_config["http"]["addr"] == f":{port}"
    # The front answers for the public names on its network too, and starts after the registries.
    assert set(declaration.outputs["hostnames"]) <= set(inputs["networksAdvanced"][0]["aliases"])
    for role, on in (("build", build), ("cache", cache), ("cache-standby", cache)):
        if on:
            assert any(d.endswith(f"Container::registry-{role}") for d in front.options["dependencies"]), role
    # Certificates: supplied files in self-signed mode, none in ACME mode.
    files = {u["file"] for u in inputs["uploads"]}
    if is_acme(stack):
        assert files == {config_path}
    else:
        (loaded,) = config["apps"]["tls"]["certificates"]["load_files"]
        assert files == {config_path, loaded["certificate"], loaded["key"]}
        assert "PRIVATE KEY" in upload(front, loaded["key"])
        assert isinstance(front.inputs["uploads"], SecretValue)  # the key upload is secret


@pytest.mark.parametrize(("stack", "build", "cache"), RUNNING)
def test_self_signed_certificate_covers_exactly_the_enabled_hostnames(stack, build, cache):
    declaration = declared(stack, build, cache)
    requests = declaration.of_type("tls:index/certRequest:CertRequest")
    if is_acme(stack):
        assert not requests
        assert not [r for r in declaration.resources if r.type.startswith("tls:")]
        assert declaration.outputs["caCertPem"] is None
        return
    (request,) = requests
    assert request.plain_inputs["dnsNames"] == declaration.outputs["hostnames"]
    assert declaration.outputs["caCertPem"].startswith("-----BEGIN CERTIFICATE-----")


@pytest.mark.parametrize(("stack", "build", "cache"), MATRIX)
def test_every_child_belongs_to_the_component(stack, build, cache):
    declaration = declared(stack, build, cache)
    (component,) = declaration.of_type(COMPONENT)
    assert "pulumi:pulumi:Stack" in component.parent
    component_urn_tail = f"{COMPONENT}::{component.name}"
    for resource in declaration.resources:
        if resource is component:
            continue
        assert "RegistryStack" in resource.parent, f"{resource.type} {resource.name} is not under the component"
        if resource.type.startswith("tls:"):
            assert resource.parent.endswith(f"{TLS_COMPONENT}::registry-tls"), resource.name
        else:
            assert resource.parent.endswith(component_urn_tail), resource.name
        assert resource.name.startswith(f"{component.name}-"), "child names derive from the component name"


@pytest.mark.parametrize(("stack", "build", "cache"), MATRIX)
def test_outputs_follow_the_switches(stack, build, cache):
    outputs = declared(stack, build, cache).outputs
    domain = stack_file_config(stack)["domain"]
    assert outputs["buildUrl"] == (f"https://docker-build.{domain}" if build else "")
    assert outputs["cacheUrl"] == (f"https://docker-cache.{domain}" if cache else "")
    mirrors = json.loads(outputs["daemonJson"]).get("registry-mirrors", [])
    assert mirrors == ([outputs["cacheUrl"]] if cache else [])
    assert outputs["dockerLogin"] == (f"docker login docker-build.{domain} -u ci" if build else "")
    assert outputs["hostsLine"].split()[1:] == outputs["hostnames"]


def test_custom_paths_network_port_and_registry_v3():
    values = {
        "users": [f"ci:{USER_PASSWORD}"],
        "dataPath": "/srv/registry",
        "network": "shared-net",
        "httpsPort": 8443,
        "bindAddress": "127.0.0.1",
        "registryImage": "registry:3.0.0",
    }
    declaration = declare(values, secret_keys=("users",), stack="dev")
    assert not declaration.of_type(NETWORK)  # an existing network is joined, not created
    assert not declaration.of_type(VOLUME)  # host folders instead of named volumes
    for role in ("build", "cache", "cache-standby", "front"):
        container = declaration.containers[f"registry-stack-dev-{role}"]
        inputs = container.plain_inputs
        assert inputs["networksAdvanced"][0]["name"] == "shared-net"
        volume, *views = inputs["volumes"]
        assert volume["hostPath"] == f"/srv/registry/{role.removesuffix('-standby')}_data"
        # The front reads the registries' storage (read-only) to send stored blobs itself.
        expected = [("/srv/registry/build_data", "/registry-data/build"), ("/srv/registry/cache_data",
                                                                            "/registry-data/cache")]
        assert [(v["hostPath"], v["containerPath"]) for v in views] == (expected if role == "front" else [])
        assert all(v["readOnly"] for v in views)
        if role != "front":
            # registry 3.x reads its config from /etc/distribution (registry-facts.md)
            assert [u["file"] for u in inputs["uploads"]] == ["/etc/distribution/config.yml"]
    front = declaration.containers["registry-stack-dev-front"].plain_inputs
    assert [(p["internal"], p["external"], p["ip"]) for p in front["ports"]] == [(443, 8443, "127.0.0.1")]
    assert declaration.outputs["buildUrl"] == "https://docker-build.dev.internal.network:8443"
    assert declaration.outputs["dockerLogin"] == "docker login docker-build.dev.internal.network:8443 -u ci"


def test_acme_with_own_ca_uploads_its_root():
    values = {
        "enableBuild": False,
        "tlsMode": "letsencrypt",
        "acmeEmail": "ops@example.com",
        "acmeDirectoryUrl": "https://pebble:14000/dir",
        "acmeTrustedRootPem": ROOT_PEM,
        "httpPort": 8080,
        "httpsPort": 8443,
    }
    declaration = declare(values, stack="dev")
    front = declaration.containers["registry-stack-dev-front"]
    config = json.loads(upload(front, renderers.FRONT_CONFIG_PATH))
    (issuer,) = config["apps"]["tls"]["automation"]["policies"][0]["issuers"]
    (root_file,) = issuer["trusted_roots_pem_files"]
    assert upload(front, root_file).strip() == ROOT_PEM.strip()
    ports = {(p["internal"], p["external"]) for p in front.plain_inputs["ports"]}
    assert ports == {(443, 8443), (config["apps"]["http"]["http_port"], 8080)}


# ---------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------


def plain_strings(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string outside a SecretValue, with JSON text searched inside as well."""
    if isinstance(value, SecretValue):
        return []
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            found += plain_strings(str(key), f"{path}.<key>")
            found += plain_strings(item, f"{path}.{key}")
        return found
    if isinstance(value, (list, tuple)):
        return [hit for i, item in enumerate(value) for hit in plain_strings(item, f"{path}[{i}]")]
    if isinstance(value, str):
        found = [(path, value)]
        try:
            parsed = json.loads(value)
        except ValueError:
            return found
        if isinstance(parsed, (dict, list)):
            found += plain_strings(parsed, f"{path}<json>")
        return found
    return []


def leaks(value: Any, secrets: list[str]) -> list[str]:
    problems = []
    forms = {s: (s, json.dumps(s)[1:-1], base64.b64encode(s.encode()).decode()) for s in secrets}
    for path, text in plain_strings(value):
        for secret, variants in forms.items():
            if any(v in text for v in variants):
                problems.append(f"{path}: holds {secret!r} in plain text")
        if "PRIVATE KEY-----" in text:
            problems.append(f"{path}: holds a private key in plain text")
    return problems


def all_leaks(declaration: Declaration, secrets: list[str]) -> list[str]:
    problems = []
    for resource in declaration.resources:
        problems += [f"{resource.type} {resource.name}{p}" for p in leaks(resource.inputs, secrets)]
    problems += [f"output {p}" for p in leaks(declaration.outputs, secrets)]
    return problems


def test_the_leak_finder_finds_leaks():
    # Guard against a finder that can never fail.
    inside_json = {"uploads": [{"content": json.dumps({"proxy": {"password": "s3cr3t-value"}})}]}
    assert leaks(inside_json, ["s3cr3t-value"])
    assert leaks({"x": base64.b64encode(b"s3cr3t-value").decode()}, ["s3cr3t-value"])
    assert leaks({"k": "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----"}, [])
    assert not leaks({"uploads": SecretValue([{"content": "s3cr3t-value PRIVATE KEY-----"}])}, ["s3cr3t-value"])


@pytest.mark.parametrize(("stack", "build", "cache"), MATRIX)
def test_no_secret_in_plain_text_in_the_stack_matrix(stack, build, cache):
    assert all_leaks(declared(stack, build, cache), [USER_PASSWORD]) == []


@cache
def declared_with_upstream_credentials(stack: str) -> Declaration:
    values, secrets = matrix_config(stack, True, True)
    values.update(upstreamCredentials=[f"docker=robot:{UPSTREAM_PASSWORD}"])
    return declare(values, secret_keys=(*secrets, "upstreamCredentials"), stack=stack)


@pytest.mark.parametrize("stack", STACKS)
def test_no_secret_in_plain_text_with_upstream_credentials(stack):
    declaration = declared_with_upstream_credentials(stack)
    assert all_leaks(declaration, [USER_PASSWORD, UPSTREAM_PASSWORD]) == []
    # The cache does receive the upstream password, but only as a secret.
    cache_registry = declaration.containers[f"registry-stack-{stack}-cache"]
    assert isinstance(cache_registry.inputs["uploads"], SecretValue)
    config = json.loads(upload(cache_registry, "/etc/distribution/config.yml"))
    assert config["proxy"]["username"] == "robot"
    assert config["proxy"]["password"] == UPSTREAM_PASSWORD
    # User passwords never leave the program, not even as secrets: the front gets bcrypt hashes.
    everything = json.dumps([unwrap(r.inputs) for r in declaration.resources]) + json.dumps(
        unwrap(declaration.outputs))
    assert USER_PASSWORD not in everything


# ---------------------------------------------------------------------------------------
# Idempotence and validation
# ---------------------------------------------------------------------------------------


def canonical(value: Any) -> Any:
    if isinstance(value, SecretValue):
        return {"<secret>": canonical(value.value)}
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def fingerprint(declaration: Declaration) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for r in declaration.resources:
        options = {**r.options, "dependencies": sorted(r.options["dependencies"])}
        rows.append((r.type, r.name, r.parent, json.dumps(canonical(r.inputs), sort_keys=True, default=repr),
                     json.dumps(options, sort_keys=True, default=repr)))
    return sorted(rows)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_declaring_twice_gives_identical_inputs(stack):
    values, secrets = matrix_config(stack, True, True)
    values.update(upstreamCredentials=[f"docker=robot:{UPSTREAM_PASSWORD}"], cacheClientNetworks=["10.0.0.0/8"],
                  upstreams=["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io"], unifiedEndpoint=True)
    secrets = (*secrets, "upstreamCredentials")
    first = declare(values, secret_keys=secrets, stack=stack)
    second = declare(values, secret_keys=secrets, stack=stack)
    assert len(first.resources) == len(second.resources) > 0
    assert fingerprint(first) == fingerprint(second)
    assert json.dumps(canonical(first.outputs), sort_keys=True) == json.dumps(
        canonical(second.outputs), sort_keys=True)


@pytest.mark.parametrize(
    ("values", "secret_keys", "stack", "shown", "hidden"),
    [
        pytest.param({"enableBuild": False, "httpsPort": "99999"}, (), "dev",
                     "registry-stack:httpsPort='99999'", None, id="bad-port"),
        pytest.param({"enableBuild": True}, (), "dev", "registry-stack:users is empty", None, id="no-users"),
        pytest.param({"enableBuild": False, "upstreamCredentials": [f"docker=robot:{UPSTREAM_PASSWORD}"]},
                     (), "dev", "registry-stack:upstreamCredentials is stored in plain text", UPSTREAM_PASSWORD,
                     id="plain-upstream-password"),
        pytest.param({"enableBuild": False}, (), "bad_stack", "stack name 'bad_stack'", None, id="bad-stack"),
        pytest.param({"enableBuild": False, "tlsMode": "letsencrypt"}, (), "prod",
                     "registry-stack:acmeEmail is required", None, id="acme-without-email"),
    ],
)
def test_bad_config_fails_before_any_resource(monkeypatch, values, secret_keys, stack, shown, hidden):
    monitors = []

    class RecordingMonitor(harness.CapturingMonitor):
        def __init__(self, mocks):
            super().__init__(mocks)
            monitors.append(self)

    monkeypatch.setattr(harness, "CapturingMonitor", RecordingMonitor)
    with pytest.raises(Exception) as caught:  # Pulumi may wrap the ConfigError
        declare(values, secret_keys=secret_keys, stack=stack)
    assert shown in str(caught.value)
    if hidden:
        assert hidden not in str(caught.value)
    assert len(monitors) == 1
    assert monitors[0].registrations == [], [r.name for r in monitors[0].registrations]

    # The failure leaves nothing behind: a good config declares normally afterwards.
    monkeypatch.undo()
    good = declare({"enableBuild": False}, stack="dev")
    assert "registry-stack-dev-front" in good.containers
    assert "registry-stack-dev-build" not in good.containers
