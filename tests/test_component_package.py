"""The component package (PulumiPlugin.yaml, components/plugin.py), tested without the Pulumi CLI.

What `pulumi package add` does with this repository, step by step, and where it is tested:

1. reads PulumiPlugin.yaml and installs the plugin's virtualenv: `test_the_plugin_runs_...`;
2. starts the plugin as the Python language host does, `python <folder> <engine address>`,
   reads the port it prints and asks it for the schema over gRPC (GetSchema), from which it
   generates the consumer's SDK: `test_the_launched_plugin_...` and the schema tests;
3. a consumer's `new RegistryStack(...)` becomes a Construct call: the provider server turns
   the request's inputs into Python values (secrets and values with dependencies as Outputs,
   numbers as floats: pulumi/provider/server.py `_construct_inputs`), the component provider
   maps them onto the args and builds the component (experimental/component.py `construct`),
   and the component's state goes back as its outputs. `built_through_the_provider` does
   exactly that under Pulumi's mocks, and the construct tests compare it with the same
   stack built directly in Python.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pulumi
import pulumi_docker as docker
import pytest
import yaml
from google.protobuf import empty_pb2, struct_pb2
from pulumi.provider.server import ProviderServicer
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc
from pulumi.runtime.sync_await import _sync_await

from components import plugin
from components.args import RegistryStackArgs
from components.config_schema import KEYS
from components.registry_stack import RegistryStack
from tests.harness import Declaration, SecretValue, declare
from tests.harness import unwrap as harness_unwrap

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = plugin.PACKAGE
REGISTRY_STACK = f"{PACKAGE}:index:RegistryStack"
PASSWORD = "Ci-Pa55word-7f3a"
TOKEN = "upstream-token-9c1e"


# -- 1. the plugin and how it is started ----------------------------------------------------


def test_the_plugin_runs_in_the_programs_virtualenv_with_python() -> None:
    manifest = yaml.safe_load((ROOT / "PulumiPlugin.yaml").read_text())
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"
    # One virtualenv for both: `pulumi install` and `pulumi package add` fill the same one.
    assert manifest["runtime"]["options"] == project["runtime"]["options"]


def test_a_process_without_a_resource_monitor_is_the_plugin() -> None:
    # The language host starts a plugin as `python <folder> <engine address>`, with nothing
    # configured (pulumi-language-python main.go RunPlugin); a program always has a monitor
    # (pulumi-language-python-exec configures it before running __main__.py).
    fresh = subprocess.run(
        [sys.executable, "-c", "from components.plugin import launched_as_plugin; print(launched_as_plugin())"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert fresh.stdout.strip() == "True"


def test_the_program_under_a_monitor_is_not_the_plugin() -> None:
    declaration = declare({"enableBuild": False})
    assert not plugin.launched_as_plugin()
    assert declaration.outputs["cacheUrl"].startswith("https://docker-cache.")


@cache
def served_schema() -> dict[str, Any]:
    """The schema the plugin serves when started the way the language host starts it."""
    process = subprocess.Popen(
        # The engine address is not dialled before a request needs it (provider/server.py main).
        [sys.executable, str(ROOT), "127.0.0.1:1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()
        if not port.isdigit():
            raise AssertionError(f"the plugin printed {port!r}, not its port: {process.communicate()[1]}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = provider_pb2_grpc.ResourceProviderStub(channel)
            info = stub.GetPluginInfo(empty_pb2.Empty(), timeout=30)
            schema = json.loads(stub.GetSchema(provider_pb2.GetSchemaRequest(version=0), timeout=30).schema)
        schema["pluginVersion"] = info.version
        return schema
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_launched_plugin_serves_the_components() -> None:
    schema = served_schema()
    assert schema["name"] == PACKAGE
    assert set(schema["resources"]) == {f"{PACKAGE}:index:{c.__name__}" for c in plugin.components()}
    assert all(resource["isComponent"] for resource in schema["resources"].values())
    assert schema["pluginVersion"] == schema["version"]


# -- 2. the schema: every field, type, description, and what it cannot say ------------------


def resource(name: str) -> dict[str, Any]:
    return served_schema()["resources"][f"{PACKAGE}:index:{name}"]


def test_daemon_mirror_is_served_with_its_own_args() -> None:
    mirror = resource("DaemonMirror")
    assert {"host", "caches"} <= set(mirror["requiredInputs"])
    assert {"host", "caches", "caCertPem", "sshPrivateKey", "daemonJsonPath"} <= set(mirror["inputProperties"])


def test_every_input_and_output_is_described() -> None:
    for token, spec in served_schema()["resources"].items():
        assert spec.get("description"), token
        for kind in ("inputProperties", "properties"):
            for name, prop in spec[kind].items():
                assert prop.get("description"), f"{token} {kind}.{name} has no description"


def test_registry_stack_inputs_are_the_config_keys_with_their_types() -> None:
    inputs = resource("RegistryStack")["inputProperties"]
    schema_type = {"string": "string", "integer": "integer", "boolean": "boolean", "array": "array"}
    assert list(inputs) == [spec.name for spec in KEYS]
    for spec in KEYS:
        prop = inputs[spec.name]
        if spec.name == "tlsMode":
            assert prop["$ref"] == f"#/types/{PACKAGE}:index:TlsMode"
        else:
            assert prop["type"] == schema_type[spec.type], spec.name
        if spec.type == "array":
            assert prop["items"]["type"] == "string", spec.name
        # Every key may be left out and takes its default, as in stack config.
    assert resource("RegistryStack")["requiredInputs"] == []


def test_tls_mode_is_an_enum_of_the_three_modes() -> None:
    enum = served_schema()["types"][f"{PACKAGE}:index:TlsMode"]
    assert enum["type"] == "string"
    assert [v["value"] for v in enum["enum"]] == ["self-signed", "letsencrypt-staging", "letsencrypt"]


def test_registry_stack_outputs() -> None:
    outputs = resource("RegistryStack")["properties"]
    assert {name: prop.get("type") for name, prop in outputs.items()} == {
        "buildUrl": "string", "cacheUrl": "string", "unifiedUrl": "string", "cacheUrls": "object",
        "caCertPem": "string", "hostnames": "array", "hostsLine": "string", "daemonJson": "string",
        "dockerLogin": "string", "podmanRegistriesConf": "string", "k3sRegistriesYaml": "string",
        "buildkitdToml": "string", "metricsUrl": "string", "prometheusScrapeConfig": "string",
        "prewarmFailures": "array",
    }


def test_secret_inputs_say_so_in_their_description_as_the_schema_cannot() -> None:
    # Pulumi 3.272's analyzer has no secret marking (no `secret` in PropertyDefinition), so the
    # generated SDKs cannot mark these inputs secret: the description is where a user learns it,
    # and the construct tests below show the values stay secret when the consumer passes secrets.
    inputs = resource("RegistryStack")["inputProperties"]
    for spec in KEYS:
        assert "secret" not in inputs[spec.name]
        assert inputs[spec.name]["description"].startswith("(secret)") == spec.secret, spec.name


# -- 3. Construct: a consumer's RegistryStack, built by the provider --------------------------


def secret(value: Any) -> dict[str, Any]:
    """A secret input as the engine sends it in a ConstructRequest."""
    return {rpc._special_sig_key: rpc._special_secret_sig, "value": value}


def wire(inputs: dict[str, Any]) -> struct_pb2.Struct:
    """The consumer's inputs as a ConstructRequest carries them (numbers become floats)."""
    request = struct_pb2.Struct()
    request.update(inputs)
    return request


def built_through_the_provider(
    inputs: dict[str, Any],
    name: str = "registry",
    depends: dict[str, list[str]] | None = None,
    preview: bool = False,
    consumer: Callable[[], dict[str, str]] = dict,
) -> Declaration:
    """`consumer` registers what the consumer's program registered first and returns the
    ConstructRequest's `providers` (package name -> provider reference)."""
    provider = plugin.provider()
    dependencies = {key: SimpleNamespace(urns=urns) for key, urns in (depends or {}).items()}

    def program() -> None:
        request = provider_pb2.ConstructRequest(name=name, type=REGISTRY_STACK, providers=consumer())
        # provider/server.py _construct: inputs and options from the request, then construct.
        values = _sync_await(ProviderServicer._construct_inputs(wire(inputs), dependencies))
        options = ProviderServicer._construct_options(request)
        result = provider.construct(name, REGISTRY_STACK, values, options)
        for output, value in result.state.items():  # what _construct_response sends back
            pulumi.export(output, value)

    return declare({}, program=program, preview=preview)


def built_directly(args: RegistryStackArgs, name: str = "registry") -> Declaration:
    outputs = resource("RegistryStack")["properties"]

    def program() -> None:
        stack = RegistryStack(name, args)
        for output in outputs:
            pulumi.export(output, getattr(stack, _snake(output)))

    return declare({}, program=program)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def registrations(declaration: Declaration) -> list[tuple[str, str, str, dict[str, Any], dict[str, Any]]]:
    return sorted(
        (r.type, r.name, r.parent, r.inputs, {k: v for k, v in r.options.items() if k != "dependencies"})
        for r in declaration.resources
    )


PLAIN_INPUTS: dict[str, Any] = {
    "domain": "registry.example.org",
    "users": [f"ci:{PASSWORD}"],
    "upstreams": ["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io"],
    "upstreamCredentials": [f"ghcr=robot:{TOKEN}"],
    "unifiedEndpoint": True,
    "httpsPort": 8443,
    "tlsMode": "self-signed",
    "certValidityDays": 90,
    "certEarlyRenewalDays": 20,
}


def test_a_construct_declares_what_the_same_stack_built_directly_declares() -> None:
    direct = built_directly({**PLAIN_INPUTS, "tlsMode": plugin_enum("self-signed")})  # type: ignore[typeddict-item]
    constructed = built_through_the_provider(PLAIN_INPUTS)
    assert registrations(constructed) == registrations(direct)
    assert constructed.outputs == direct.outputs
    assert constructed.outputs["buildUrl"] == "https://docker-build.registry.example.org:8443"
    containers = {r.plain_inputs["name"] for r in constructed.of_type("docker:index/container:Container")}
    assert {"registry-stack-dev-build", "registry-stack-dev-ghcr-cache", "registry-stack-dev-front"} <= containers


def test_secrets_passed_by_the_consumer_stay_secret_and_build_the_same_stack() -> None:
    # A consumer that does it right: pulumi.secret(...) in TypeScript, `secret: true` config in
    # YAML. The provider server hands such inputs over as secret Outputs.
    inputs = {
        **PLAIN_INPUTS,
        "users": secret([f"ci:{PASSWORD}"]),
        "upstreamCredentials": [secret(f"ghcr=robot:{TOKEN}")],
    }
    constructed = built_through_the_provider(inputs)
    assert registrations(constructed) == registrations(built_through_the_provider(PLAIN_INPUTS))
    for registered in constructed.resources:
        assert PASSWORD not in json.dumps(_plain_parts(registered.inputs)), registered.name
        assert TOKEN not in json.dumps(_plain_parts(registered.inputs)), registered.name


def _plain_parts(value: Any) -> Any:
    """A resource's inputs without the values declared secret."""
    if isinstance(value, SecretValue):
        return "[secret]"
    if isinstance(value, dict):
        return {k: _plain_parts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_parts(v) for v in value]
    return value


def test_a_bad_input_is_refused_naming_the_key_before_anything_is_created() -> None:
    with pytest.raises(Exception, match=r"registry-stack:httpsPort=70000 is invalid") as error:
        built_through_the_provider({**PLAIN_INPUTS, "httpsPort": 70000})
    assert "Traceback" not in str(error.value)


def test_an_unknown_tls_mode_is_refused_by_the_enum() -> None:
    with pytest.raises(Exception, match="tlsMode"):
        built_through_the_provider({**PLAIN_INPUTS, "tlsMode": "letsencrypt-prod"})


def test_a_secret_where_the_component_keeps_no_secret_is_refused_not_made_plain() -> None:
    with pytest.raises(Exception, match=r"registry-stack:domain was passed as a secret"):
        built_through_the_provider({**PLAIN_INPUTS, "domain": secret("registry.example.org")})


def test_a_value_that_depends_on_a_resource_is_used_once_known() -> None:
    # `domain: zone.name` in the consumer's program: sent with the zone as its dependency.
    zone = "urn:pulumi:dev::consumer::random:index/randomPet:RandomPet::zone"
    constructed = built_through_the_provider(PLAIN_INPUTS, depends={"domain": [zone]})
    assert registrations(constructed) == registrations(built_through_the_provider(PLAIN_INPUTS))


def test_a_value_not_known_in_the_preview_is_refused_naming_the_input() -> None:
    # The same, in the preview of the run that creates the zone: its name is not known yet.
    zone = "urn:pulumi:dev::consumer::random:index/randomPet:RandomPet::zone"
    with pytest.raises(Exception, match=r"registry-stack:domain is not known yet"):
        built_through_the_provider({**PLAIN_INPUTS, "domain": rpc.UNKNOWN}, depends={"domain": [zone]}, preview=True)


def test_a_docker_provider_passed_by_the_consumer_reaches_every_docker_resource() -> None:
    # `new RegistryStack("registry", {...}, { providers: { docker: buildHost } })`: the engine
    # sends the provider's reference, `<urn>::<id>`, in the ConstructRequest.
    references: list[str] = []

    def consumer() -> dict[str, str]:
        build_host = docker.Provider("build-host", host="ssh://deploy@build-host.example")
        urn, resource_id = _sync_await(pulumi.Output.all(build_host.urn, build_host.id).future())
        references.append(f"{urn}::{resource_id}")
        return {"docker": references[0]}

    constructed = built_through_the_provider(PLAIN_INPUTS, consumer=consumer)
    docker_resources = [r for r in constructed.resources if r.type.startswith("docker:index")]
    assert len(docker_resources) > 6
    assert {r.provider for r in docker_resources} == set(references)
    assert all(r.provider != references[0] for r in constructed.resources if not r.type.startswith("docker:"))


def plugin_enum(value: str) -> Any:
    from components.args import TlsMode

    return TlsMode(value)



def readme_yaml_example() -> dict[str, Any]:
    """The YAML program of the README's component-package section."""
    text = (ROOT / "README.md").read_text()
    blocks = [block.split("```", 1)[0] for block in text.split("```yaml\n")[1:]]
    (program,) = [yaml.safe_load(block) for block in blocks if f"type: {REGISTRY_STACK}" in block]
    return program


def test_the_readme_yaml_example_builds_with_its_secret_password() -> None:
    program = readme_yaml_example()
    assert program["config"]["ciPassword"] == {"type": "string", "secret": True}
    properties = program["resources"]["registry"]["properties"]
    # Pulumi YAML interpolates the secret config value: the engine sends the list as a secret.
    users = [entry.replace("${ciPassword}", PASSWORD) for entry in properties["users"]]
    constructed = built_through_the_provider({**properties, "users": secret(users)})
    for output in program["outputs"].values():
        assert output.startswith("${registry.") and output[len("${registry."):-1] in constructed.outputs
    assert constructed.outputs["buildUrl"] == f"https://docker-build.{properties['domain']}"
    front = constructed.containers["registry-stack-dev-front"]
    assert PASSWORD not in json.dumps(_plain_parts(front.inputs))
    # The front's uploads (its caddy.json with the user's bcrypt hash) are a secret as a whole.
    assert isinstance(front.inputs["uploads"], SecretValue)
    caddy = [u["content"] for u in harness_unwrap(front.inputs["uploads"]) if u["file"] == "/etc/caddy/caddy.json"]
    assert '"username": "ci"' in caddy[0]
