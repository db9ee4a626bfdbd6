"""The client runtimes' own mirror configs (components/client_configs.py) and the stack outputs.

Each rendered text is parsed with the format's own parser (TOML, YAML) and checked for
the keys the runtime reads, as its documentation names them:
containers-registries.conf(5) for podman/CRI-O, k3s's registries.yaml
(`mirrors.<registry>.endpoint`, `configs.<host>.tls.ca_file`) and BuildKit's
buildkitd.toml (`[registry."<host>"] mirrors`, `ca`). No k3s, RKE2 or buildkitd binary
exists here to run them (README, client matrix); podman's drop-in is also proven on a real
podman 5 host by tests/e2e/test_hosts_runtimes.py.
"""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
import yaml

from components import client_configs
from components.client_configs import CachedRegistry, registry_name
from tests.harness import declare

HUB = CachedRegistry("docker.io", "https://registry-1.docker.io", "https://docker-cache.example:8443",
                     "docker-cache.example:8443")
GHCR = CachedRegistry("ghcr.io", "https://ghcr.io", "https://ghcr-cache.example:8443", "ghcr-cache.example:8443")
PRIVATE = CachedRegistry("registry.corp:5000", "https://registry.corp:5000", "https://corp-cache.example:8443",
                         "corp-cache.example:8443")
REGISTRIES = (HUB, GHCR, PRIVATE)


@pytest.mark.parametrize(("url", "name"), [
    ("https://registry-1.docker.io", "docker.io"),
    ("https://index.docker.io", "docker.io"),
    ("https://docker.io", "docker.io"),
    ("https://ghcr.io", "ghcr.io"),
    ("https://quay.io/", "quay.io"),
    ("http://registry.corp:5000", "registry.corp:5000"),
])
def test_registry_name_is_what_clients_pull_by(url: str, name: str) -> None:
    assert registry_name(url) == name


def test_podman_drop_in_has_a_registry_and_its_mirror_per_upstream() -> None:
    parsed = tomllib.loads(client_configs.podman_registries_conf(REGISTRIES))
    assert parsed == {"registry": [
        {"prefix": r.registry, "location": r.registry, "mirror": [{"location": r.cache_address}]} for r in REGISTRIES
    ]}


@pytest.mark.parametrize("ca_file", ["/etc/rancher/k3s/registry-stack-ca.crt", None])
def test_k3s_registries_yaml_mirrors_every_registry_and_trusts_the_ca(ca_file: str | None) -> None:
    parsed = yaml.safe_load(client_configs.k3s_registries_yaml(REGISTRIES, ca_file))
    assert parsed["mirrors"] == {r.registry: {"endpoint": [r.cache_url]} for r in REGISTRIES}
    if ca_file:
        assert parsed["configs"] == {r.cache_address: {"tls": {"ca_file": ca_file}} for r in REGISTRIES}
    else:
        assert "configs" not in parsed, "a public certificate needs no CA file"


def test_k3s_yaml_says_it_needs_a_restart() -> None:
    assert "restart k3s" in client_configs.k3s_registries_yaml(REGISTRIES)


@pytest.mark.parametrize("ca_file", ["/etc/buildkit/registry-stack-ca.crt", None])
def test_buildkitd_toml_mirrors_every_registry_and_trusts_the_ca(ca_file: str | None) -> None:
    parsed = tomllib.loads(client_configs.buildkitd_toml(REGISTRIES, ca_file))["registry"]
    for entry in REGISTRIES:
        assert parsed[entry.registry] == {"mirrors": [entry.cache_address]}
        assert parsed.get(entry.cache_address) == ({"ca": [ca_file]} if ca_file else None)


def program(**overrides: Any) -> dict[str, Any]:
    values = {
        "users": ["ci:Ci-Pa55word-7f3a"], "httpsPort": 8443, "domain": "example.internal",
        "upstreams": ["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io"], **overrides,
    }
    secrets = ("users",) if "users" in values else ()
    return declare(values, secret_keys=secrets, stack="dev").outputs


def test_the_stack_exports_each_runtimes_config_for_its_caches() -> None:
    outputs = program()
    podman = tomllib.loads(outputs["podmanRegistriesConf"])
    assert [(r["prefix"], r["mirror"][0]["location"]) for r in podman["registry"]] == [
        ("docker.io", "docker-cache.example.internal:8443"), ("ghcr.io", "ghcr-cache.example.internal:8443"),
    ]
    k3s = yaml.safe_load(outputs["k3sRegistriesYaml"])
    assert k3s["mirrors"]["ghcr.io"]["endpoint"] == ["https://ghcr-cache.example.internal:8443"]
    assert k3s["configs"]["docker-cache.example.internal:8443"]["tls"]["ca_file"] == client_configs.K3S_CA_FILE
    buildkit = tomllib.loads(outputs["buildkitdToml"])["registry"]
    assert buildkit["docker.io"]["mirrors"] == ["docker-cache.example.internal:8443"]


def test_without_a_cache_the_client_configs_are_empty() -> None:
    outputs = program(enableCache=False)
    assert (outputs["podmanRegistriesConf"], outputs["k3sRegistriesYaml"], outputs["buildkitdToml"]) == ("", "", "")


def test_acme_certificates_need_no_ca_in_the_client_configs() -> None:
    outputs = program(tlsMode="letsencrypt", acmeEmail="ops@example.com", httpsPort=443)
    assert "configs" not in yaml.safe_load(outputs["k3sRegistriesYaml"])
    buildkit = tomllib.loads(outputs["buildkitdToml"])["registry"]
    assert buildkit == {"docker.io": {"mirrors": ["docker-cache.example.internal"]},
                        "ghcr.io": {"mirrors": ["ghcr-cache.example.internal"]}}


def test_daemon_mirror_installs_the_same_podman_drop_in_the_stack_exports() -> None:
    from components.daemon_mirror import MirrorPlan, host_script_args, podman_drop_in_name
    from components.mirror_settings import MirrorHost

    args = MirrorPlan(
        host=MirrorHost(entry="ssh://root@n1?docker=false&podman=true", user="root", host="n1", docker=False,
                        podman=True, host_key="ssh-ed25519 AAAA"),
        stack_id="registry-stack-dev", cache_url=HUB.cache_url, cache_address=HUB.cache_address,
        upstream_url=HUB.upstream_url, more_caches=((GHCR.upstream_url, GHCR.cache_url, GHCR.cache_address),),
    )
    files = {f["path"]: f["content"] for f in host_script_args(args, "PEM")["files"]}
    drop_in = f"/etc/containers/registries.conf.d/{podman_drop_in_name('registry-stack-dev')}"
    assert files[drop_in] == client_configs.podman_registries_conf((HUB, GHCR))
    assert files[f"/etc/containers/certs.d/{GHCR.cache_address}/ca.crt"] == "PEM"
    assert host_script_args(args, "PEM")["daemon_json"] is None
