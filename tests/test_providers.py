"""A remote Docker host: every docker resource goes through the one provider that targets it.

Two ways a stack reaches another engine, both covered here under mocks:

- stack config `docker:host: ssh://user@host` (+ `docker:sshOpts`): Pulumi's default docker
  provider reads it, so every docker resource must use the default provider (an explicit
  provider on some resource would silently put that container on another engine);
- an explicit `docker.Provider(host=...)` given to RegistryStack with
  `ResourceOptions(providers={"docker": ...})`: every docker child must inherit it.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests import harness
from tests.harness import Declaration, declare

USERS = ["ci:Provider-Pa55word-3k"]
REMOTE_HOST = "ssh://deploy@registry-host.example:2222"
SSH_OPTS = ["-o", "StrictHostKeyChecking=yes", "-o", "ServerAliveInterval=30"]
PROVIDER = "pulumi:providers:docker"

# A program that builds the same stack as __main__.py, on an explicit provider.
EXPLICIT_PROVIDER_PROGRAM = textwrap.dedent(f"""
    import pulumi
    import pulumi_docker as docker

    from components.registry_stack import RegistryStack
    from components.stack_config import registry_stack_args

    remote = docker.Provider("remote-docker", host={REMOTE_HOST!r}, ssh_opts={SSH_OPTS!r})
    RegistryStack("registry", registry_stack_args(), opts=pulumi.ResourceOptions(providers={{"docker": remote}}))
""")

SWITCHES = [
    pytest.param({}, id="build+cache"),
    pytest.param({"enableCache": False}, id="build-only"),
    pytest.param({"enableBuild": False}, id="cache-only"),
    pytest.param({"upstreams": ["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io"]}, id="two-caches"),
    pytest.param({"tlsMode": "letsencrypt", "acmeEmail": "ops@example.com", "dataPath": "/srv/registry"},
                 id="acme-host-folders"),
]


def docker_resources(declaration: Declaration) -> list[harness.DeclaredResource]:
    return [r for r in declaration.resources if r.type.startswith("docker:")]


def values_with(switches: dict) -> dict:
    return {"users": USERS, **switches}


def stack_for(switches: dict) -> str:
    return "prod" if "tlsMode" in switches else "dev"


@pytest.mark.parametrize("switches", SWITCHES)
def test_docker_host_config_reaches_every_container_through_the_default_provider(switches: dict) -> None:
    values = {**values_with(switches), "docker:host": REMOTE_HOST, "docker:sshOpts": SSH_OPTS}
    declaration = declare(values, secret_keys=("users",), stack=stack_for(switches))
    resources = docker_resources(declaration)
    assert {"docker:index/container:Container", "docker:index/remoteImage:RemoteImage"} <= {r.type for r in resources}
    # No explicit provider anywhere: the engine's default docker provider, configured from
    # docker:host and docker:sshOpts, creates every image, volume, network and container.
    explicit = [f"{r.type} {r.name} -> {r.provider}" for r in resources if r.provider]
    assert explicit == []
    assert not declaration.of_type(PROVIDER)


@pytest.mark.parametrize("switches", SWITCHES)
def test_an_explicit_provider_reaches_every_docker_child(
    switches: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "__main__.py").write_text(EXPLICIT_PROVIDER_PROGRAM)
    monkeypatch.setattr(harness, "ROOT", tmp_path)
    declaration = declare(values_with(switches), secret_keys=("users",), stack=stack_for(switches))

    (provider,) = declaration.of_type(PROVIDER)
    assert provider.plain_inputs["host"] == REMOTE_HOST
    assert json.loads(provider.plain_inputs["sshOpts"]) == SSH_OPTS  # provider inputs travel as JSON
    containers = declaration.of_type("docker:index/container:Container")
    assert len(containers) == len(declaration.containers) >= 2
    resources = docker_resources(declaration)
    elsewhere = [f"{r.type} {r.name} -> {r.provider or 'the default provider'}"
                 for r in resources if not r.provider.endswith("::remote-docker::remote-docker-id")]
    assert elsewhere == [], "these would be created on another engine"
    # The provider is for docker only: the TLS resources keep their own.
    assert all(not r.provider for r in declaration.resources if r.type.startswith("tls:"))


def test_the_program_ignores_other_namespaces_in_its_key_check() -> None:
    """docker:* keys sit beside registry-stack:* ones in a stack file; only the latter are validated."""
    values = {**values_with({}), "docker:host": REMOTE_HOST, "docker:caMaterial": "x"}
    declaration = declare(values, secret_keys=("users",), stack="dev")
    assert declaration.containers
