"""DaemonMirrorArgs: DaemonMirror used on its own, from plain args a program in any language passes.

The schema Pulumi's component host infers from the args (its own analyzer reads them here),
a DaemonMirror built from its args alone declaring what RegistryStack's does, and the checks
that refuse bad args before anything registers, with the errors stack config gets.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pulumi
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pulumi.provider.experimental.analyzer import Analyzer, PropertyType

from components.args import DaemonMirrorArgs, MirroredCacheArgs
from components.daemon_mirror import DaemonMirror
from tests import harness

P = "registry-stack"
USERS = ["ci:Ci-Pa55word-7f3a"]
HOST_KEY = (
    ed25519.Ed25519PrivateKey.from_private_bytes(bytes([8]) * 32)
    .public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
)
_KEY_BLOB = b"openssh-key-v1\0" + (4).to_bytes(4, "big") + b"none" + b"\0\0\0\4some-key-bytes"
PRIVATE_KEY = (  # not a usable key: only its shape matters
    f"-----BEGIN OPENSSH PRIVATE KEY-----\n{base64.b64encode(_KEY_BLOB).decode()}\n-----END OPENSSH PRIVATE KEY-----\n"
)
SSH_ENTRY = f"ssh://root@node1.example:2222?containerd=true&etcHosts=10.0.0.5&hostKey={HOST_KEY}"
COMMANDS = ("command:local:Command", "command:remote:Command")


def test_the_schema_pulumi_infers_has_every_field_with_its_description() -> None:
    analyzer = Analyzer(P)
    properties, _ = analyzer.analyze_type(DaemonMirrorArgs, is_component_output=False)
    assert list(properties) == list(DaemonMirrorArgs.__annotations__)
    assert {name for name, prop in properties.items() if not prop.optional} == {"host", "caches"}
    assert all(prop.description for prop in properties.values())
    assert properties["caches"].type == PropertyType.ARRAY
    items = properties["caches"].items
    assert items is not None and items.ref == f"#/types/{P}:index:MirroredCacheArgs"
    assert properties["hostnames"].items is not None and properties["hostnames"].items.type == PropertyType.STRING
    assert properties["sshPrivateKey"].description.startswith("(secret)")
    cache, _ = analyzer.analyze_type(MirroredCacheArgs, is_component_output=False)
    assert {name: prop.type for name, prop in cache.items()} == {
        "upstreamUrl": PropertyType.STRING, "cacheUrl": PropertyType.STRING,
    }
    component = analyzer.analyze_component(DaemonMirror)
    assert set(component.inputs) == set(properties)
    assert set(component.outputs) == {"host", "configured", "report"}


def _commands(declaration: harness.Declaration) -> list[tuple[str, str, str, bool]]:
    return sorted(
        (r.type, r.name, json.dumps(harness.unwrap(r.inputs), sort_keys=True, default=str),
         r.options["deleteBeforeReplace"])
        for r in declaration.resources if r.type in COMMANDS
    )


def _secret_inputs(declaration: harness.Declaration) -> dict[str, Any]:
    (remote,) = declaration.of_type("command:remote:Command")
    return remote.inputs["connection"]


def test_a_daemon_mirror_from_its_args_alone_declares_what_registry_stack_declares() -> None:
    config = {
        "users": USERS, "httpsPort": 8443, "hostAddress": "10.0.0.5",
        "upstreams": ["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io"],
        "mirrorHosts": ["local?podman=true&etcHosts=true", SSH_ENTRY], "mirrorSshPrivateKey": PRIVATE_KEY,
    }
    from_stack = harness.declare(config, secret_keys=("users", "mirrorSshPrivateKey"))
    ca_cert_pem = from_stack.outputs["caCertPem"]
    assert "BEGIN CERTIFICATE" in ca_cert_pem

    def program() -> None:
        common: dict[str, Any] = {
            "caches": [
                {"upstreamUrl": "https://registry-1.docker.io", "cacheUrl": "https://docker-cache.dev.internal.network:8443"},
                {"upstreamUrl": "https://ghcr.io", "cacheUrl": "https://ghcr-cache.dev.internal.network:8443"},
            ],
            "hostnames": list(from_stack.outputs["hostnames"]),
            "hostAddress": "10.0.0.5",
            "caCertPem": ca_cert_pem,
        }
        DaemonMirror("registry-mirror-local", {"host": "local?podman=true&etcHosts=true", **common})
        DaemonMirror("registry-mirror-node1.example",
                     {"host": SSH_ENTRY, "sshPrivateKey": PRIVATE_KEY, **common})  # type: ignore[typeddict-item]

    alone = harness.declare({}, program=program)
    assert len(_commands(alone)) == 2
    assert _commands(alone) == _commands(from_stack)
    # The key reaches the provider as a secret (its connection is) in both.
    connection = _secret_inputs(alone)
    assert isinstance(connection, harness.SecretValue) and connection.value["privateKey"] == PRIVATE_KEY
    assert connection == _secret_inputs(from_stack)


def _refused(args: dict[str, Any]) -> str:
    return harness.refusal_before_any_registration(lambda: DaemonMirror("m", args) and None)  # type: ignore[arg-type]


CACHES = [{"upstreamUrl": "https://registry-1.docker.io", "cacheUrl": "https://docker-cache.example.internal"}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # The host entry, the key and the path: the errors of mirrorHosts, mirrorSshPrivateKey, daemonJsonPath.
        ({"host": "ftp://node1", "caches": CACHES}, f"{P}:mirrorHosts[0]='ftp://node1' is invalid: scheme 'ftp'"),
        ({"host": "ssh://root@node1", "caches": CACHES}, f"{P}:mirrorHosts[0]='ssh://root@node1' has no host key"),
        ({"host": f"ssh://root@node1?hostKey={HOST_KEY}", "caches": CACHES},
         f"{P}:mirrorHosts has ssh host 'ssh://root@node1?hostKey={HOST_KEY}' but {P}:mirrorSshPrivateKey is not set"),
        ({"host": "local", "caches": CACHES, "sshPrivateKey": "~/.ssh/id_ed25519"},
         f"{P}:mirrorSshPrivateKey=**** is invalid"),
        ({"host": "local", "caches": CACHES, "daemonJsonPath": "daemon.json"}, f"{P}:daemonJsonPath='daemon.json'"),
        # What only DaemonMirror takes.
        ({"host": "local", "caches": []}, "DaemonMirror caches=[] is invalid"),
        ({"host": "local", "caches": [{"cacheUrl": "https://c.example"}]}, "DaemonMirror caches[0]="),
        ({"host": "local", "caches": [{**CACHES[0], "cacheUrl": "http://c.example"}]},
         "DaemonMirror caches[0].cacheUrl='http://c.example' is invalid: expected a URL https://host[:port]"),
        ({"host": "local", "caches": CACHES, "hostnames": ["not a name"]}, "DaemonMirror hostnames=['not a name']"),
        ({"host": "local", "caches": CACHES, "hostAddress": "node1"}, "DaemonMirror hostAddress='node1'"),
        ({"host": "local", "caches": CACHES, "stackId": "../x"}, "DaemonMirror stackId='../x'"),
        ({"host": "local", "caches": CACHES, "caCertPem": "not a pem"}, "DaemonMirror caCertPem='not a pem'"),
        ({"host": "local", "caches": CACHES, "colour": "blue"}, "DaemonMirror: unknown argument 'colour'"),
        ({"host": pulumi.Output.from_input("local"), "caches": CACHES}, "DaemonMirror host is an Output"),
        ({"host": "local", "caches": [{**CACHES[0], "cacheUrl": pulumi.Output.from_input("https://c.example")}]},
         "DaemonMirror caches is an Output"),
    ],
)
def test_bad_args_are_refused_before_anything_registers(args: dict[str, Any], message: str) -> None:
    refused = _refused(args)
    assert refused.startswith(message), refused
    assert PRIVATE_KEY.splitlines()[1] not in refused


def test_defaults_a_program_may_leave_out() -> None:
    def program() -> None:
        mirror = DaemonMirror("m", {"host": "local", "caches": CACHES})
        pulumi.export("configured", mirror.configured)

    declaration = harness.declare({}, stack="stage", program=program)
    assert declaration.outputs["configured"] == {
        "registryMirror": "https://docker-cache.example.internal", "daemonJson": "/etc/docker/daemon.json",
        "files": [], "etcHostsLine": None,
    }
    (command,) = declaration.of_type("command:local:Command")
    assert '"id": "registry-stack-stage"' in command.plain_inputs["create"]


def test_an_ssh_key_passed_as_an_output_is_checked_when_known_and_stays_secret() -> None:
    entry = f"ssh://root@node1?hostKey={HOST_KEY}"

    def program(key: str) -> Callable[[], None]:
        return lambda: DaemonMirror("m", {"host": entry, "caches": CACHES,  # type: ignore[typeddict-item]
                                          "sshPrivateKey": pulumi.Output.secret(key)}) and None

    (remote,) = harness.declare({}, program=program(PRIVATE_KEY)).of_type("command:remote:Command")
    connection = remote.inputs["connection"]
    assert isinstance(connection, harness.SecretValue) and connection.value["privateKey"] == PRIVATE_KEY
    with pytest.raises(ValueError, match=rf"{P}:mirrorSshPrivateKey=\*\*\*\* is invalid"):
        harness.declare({}, program=program("~/.ssh/id_ed25519"))
