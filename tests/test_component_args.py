"""RegistryStackArgs and TlsArgs: the config keys as typed component arguments.

The args carry the keys of components/config_schema.py under the same names, with the
same descriptions in the schema Pulumi's component host infers (its own analyzer reads
them here), and the components check them as stack config is checked, before anything
registers. A program that builds RegistryStack from args declares what the config does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pulumi
import pytest
from pulumi.provider.experimental.analyzer import Analyzer, PropertyType

from components.args import RegistryStackArgs, TlsArgs, TlsMode
from components.config_schema import KEYS, ConfigError, key
from components.registry_stack import RegistryStack
from components.settings import TLS_MODES
from components.tls import Tls
from tests import harness

P = "registry-stack"
USERS = ["alice:correct-horse-1"]
SCHEMA_TYPES = {"boolean": PropertyType.BOOLEAN, "integer": PropertyType.INTEGER,
                "string": PropertyType.STRING, "array": PropertyType.ARRAY}


def inferred(args_type: type) -> dict[str, Any]:
    properties, _ = Analyzer(P).analyze_type(args_type, is_component_output=False)
    return properties


def test_registry_stack_args_are_the_config_keys():
    properties = inferred(RegistryStackArgs)
    assert list(properties) == [spec.name for spec in KEYS]
    for spec in KEYS:
        prop = properties[spec.name]
        assert prop.optional, spec.name  # a key left out takes its default
        assert prop.description == spec.documented_description, spec.name
        if spec.name == "tlsMode":
            assert prop.ref == f"#/types/{P}:index:TlsMode"
        else:
            assert prop.type == SCHEMA_TYPES[spec.type], spec.name
        if spec.type == "array":
            assert prop.items is not None and prop.items.type == PropertyType.STRING


def test_tls_mode_enum_is_the_modes_of_the_config():
    assert [mode.value for mode in TlsMode] == list(TLS_MODES)


def test_tls_args_share_the_config_keys_descriptions():
    properties = inferred(TlsArgs)
    for name in ("tlsMode", "certValidityDays", "certEarlyRenewalDays"):
        assert properties[name].description == key(name).documented_description
    assert not properties["hostnames"].optional


def _registry_stack_program(args: dict[str, Any]) -> None:
    """A program of its own that uses RegistryStack through its args."""
    stack = RegistryStack("registry", args)  # type: ignore[arg-type]
    pulumi.export("cacheUrl", stack.cache_url)
    pulumi.export("hostnames", stack.hostnames)


def _registry_stack(args: dict[str, Any]) -> harness.Declaration:
    """That program, run under mocks."""
    return harness.declare({}, program=lambda: _registry_stack_program(args))


def _fingerprint(declaration: harness.Declaration) -> list[tuple[str, str, str, str]]:
    return sorted((r.type, r.name, r.parent, json.dumps(harness.unwrap(r.inputs), sort_keys=True, default=str))
                  for r in declaration.resources)


def test_a_program_using_args_declares_what_the_config_declares():
    config = {"users": USERS, "upstreams": ["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io"],
              "httpsPort": 8443, "unifiedEndpoint": True}
    from_config = harness.declare(config, secret_keys=("users",))
    from_args = _registry_stack({**config, "tlsMode": TlsMode.SELF_SIGNED})
    assert _fingerprint(from_args) == _fingerprint(from_config)
    assert from_args.outputs["hostnames"] == from_config.outputs["hostnames"]
    assert from_args.outputs["cacheUrl"] == "https://docker-cache.dev.internal.network:8443"


def test_integers_from_other_languages_arrive_as_floats_and_are_accepted():
    declaration = _registry_stack({"enableBuild": False, "httpsPort": 8443.0})
    assert declaration.outputs["cacheUrl"].endswith(":8443")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"enableBuild": False, "httpsPort": 0},
         f"{P}:httpsPort=0 is invalid: expected a whole number from 1 to 65535"),
        ({"enableBuild": True}, f"{P}:users is empty but {P}:enableBuild is true"),
        ({"enableBuild": False, "tlsMode": "acme"}, f"{P}:tlsMode='acme' is invalid: expected one of"),
        ({"enableBuild": False, "domain": "localhost"}, f"{P}:domain='localhost' is invalid"),
        ({"enableBuild": False, "domain": pulumi.Output.from_input("example.internal")}, f"{P}:domain is an Output"),
        ({"enableBuild": False, "colour": "blue"}, "unknown setting 'colour'"),
    ],
)
def test_bad_args_are_refused_before_anything_registers(args, message):
    refusal = harness.refusal_before_any_registration(lambda: _registry_stack_program(args))
    assert refusal.startswith(message), refusal


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"hostnames": ["a.example"], "tlsMode": "acme"}, f"{P}:tlsMode='acme' is invalid"),
        ({"hostnames": ["a.example"], "certValidityDays": 30, "certEarlyRenewalDays": 30},
         f"{P}:certEarlyRenewalDays=30 must be smaller than certValidityDays=30"),
        ({"hostnames": "a.example"}, "Tls hostnames='a.example' is invalid"),
    ],
)
def test_bad_tls_args_are_refused(args, message):
    def program() -> None:
        Tls("tls", args)

    with pytest.raises(ConfigError) as caught:
        harness.declare({}, program=program)
    assert str(caught.value).startswith(message)


def test_tls_from_args_makes_a_ca_and_a_leaf_for_its_hostnames():
    def program() -> None:
        Tls("tls", {"hostnames": ["a.example", "b.example"], "caCommonName": "my CA"})

    declaration = harness.declare({}, program=program)
    request = declaration.named("tls-leaf-request").plain_inputs
    assert request["dnsNames"] == ["a.example", "b.example"]
    assert declaration.named("tls-ca").plain_inputs["subject"]["commonName"] == "my CA"
    acme = harness.declare({}, program=lambda: Tls("tls", {"hostnames": ["a.example"],
                                                         "tlsMode": TlsMode.LETSENCRYPT}) and None)
    assert [r.name for r in acme.resources] == ["tls"]


def test_registry_stack_args_are_what_scripts_config_table_prints():
    # After a change to config_schema.py: `scripts/config-table --args` prints the new fields.
    printed = subprocess.run([sys.executable, str(harness.ROOT / "scripts" / "config-table"), "--args"],
                             capture_output=True, text=True, check=True).stdout.rstrip("\n")
    source = (harness.ROOT / "components" / "args.py").read_text()
    body = source[source.index("    enableBuild: NotRequired"):source.index("class TlsArgs")].rstrip("\n")
    assert body == printed
