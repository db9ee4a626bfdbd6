"""Run the Pulumi program under mocks and capture everything it declares.

`declare(config)` runs __main__.py in a fresh Pulumi runtime and returns a `Declaration`:
every registered resource (type, name, parent, options, inputs) and the stack outputs.
Secret values stay wrapped (`SecretValue`) so tests can tell a secret from plain text;
`unwrap()` gives plain data for the e2e realizer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import runpy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime
import pulumi.runtime.config as runtime_config
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "registry-stack"
SECRET_SIG = rpc._special_sig_key
SECRET_MARK = rpc._special_secret_sig


@dataclass(frozen=True)
class SecretValue:
    """A value the program declared as secret."""

    value: Any


@dataclass
class DeclaredResource:
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str = ""
    provider: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def plain_inputs(self) -> dict[str, Any]:
        return unwrap(self.inputs)


@dataclass
class Declaration:
    resources: list[DeclaredResource]
    outputs: dict[str, Any]
    logs: list[str]

    def of_type(self, type_token: str) -> list[DeclaredResource]:
        return [r for r in self.resources if r.type == type_token]

    def named(self, name: str) -> DeclaredResource:
        matches = [r for r in self.resources if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{name}: {len(matches)} resources")
        return matches[0]

    @property
    def containers(self) -> dict[str, DeclaredResource]:
        return {r.plain_inputs["name"]: r for r in self.of_type("docker:index/container:Container")}


def wrap_secrets(value: Any) -> Any:
    """Turn the wire form of secrets into SecretValue markers."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_MARK:
            return SecretValue(unwrap(value.get("value")))
        return {k: wrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [wrap_secrets(v) for v in value]
    return value


def unwrap(value: Any) -> Any:
    if isinstance(value, SecretValue):
        return unwrap(value.value)
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_MARK:
            return unwrap(value.get("value"))
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def _fake_pem(kind: str, name: str) -> str:
    body = base64.b64encode(hashlib.sha256(f"{kind}:{name}".encode()).digest() * 3).decode()
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n"


class Mocks(pulumi.runtime.Mocks):
    """Deterministic provider outputs: the same program declares the same values every run."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        outputs = dict(args.inputs)
        token = args.typ
        if token == "docker:index/remoteImage:RemoteImage":
            name = args.inputs["name"]
            outputs["imageId"] = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
            outputs["repoDigest"] = f"{name.split(':')[0]}@sha256:{hashlib.sha256(name.encode()).hexdigest()}"
        elif token == "tls:index/privateKey:PrivateKey":
            outputs["privateKeyPem"] = _fake_pem("PRIVATE KEY", args.name)
            outputs["publicKeyPem"] = _fake_pem("PUBLIC KEY", args.name)
        elif token in ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert"):
            outputs["certPem"] = _fake_pem("CERTIFICATE", args.name)
        elif token == "tls:index/certRequest:CertRequest":
            outputs["certRequestPem"] = _fake_pem("CERTIFICATE REQUEST", args.name)
        elif token == "random:index/randomId:RandomId":
            digest = hashlib.sha256(args.name.encode()).hexdigest()
            outputs["hex"] = digest[: 2 * int(args.inputs.get("byteLength", 16))]
            outputs["b64Std"] = base64.b64encode(bytes.fromhex(outputs["hex"])).decode()
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list | None]:
        return {}, None


class CapturingMonitor(MockMonitor):
    """A mock monitor that also records each registration's options."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[DeclaredResource] = []

    def RegisterResource(self, request):  # noqa: N802 (gRPC name)
        if request.type != "pulumi:pulumi:Stack":
            self.registrations.append(
                DeclaredResource(
                    type=request.type,
                    name=request.name,
                    inputs={},  # filled from the mocks' view, secrets still wrapped
                    parent=request.parent,
                    provider=request.provider,
                    options={
                        "protect": request.protect,
                        "retainOnDelete": request.retainOnDelete,
                        "deleteBeforeReplace": request.deleteBeforeReplace,
                        "replaceOnChanges": list(request.replaceOnChanges),
                        "ignoreChanges": list(request.ignoreChanges),
                        "additionalSecretOutputs": list(request.additionalSecretOutputs),
                        "dependencies": list(request.dependencies),
                        "custom": request.custom,
                    },
                )
            )
        return super().RegisterResource(request)


class _InputRecorder(pulumi.runtime.Mocks):
    """Records each resource's inputs (secrets still wrapped), then asks the real mocks."""

    def __init__(self, delegate: pulumi.runtime.Mocks) -> None:
        self.delegate = delegate
        self.inputs: dict[tuple[str, str], dict[str, Any]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self.inputs[(args.typ, args.name)] = wrap_secrets(args.inputs)
        return self.delegate.new_resource(args)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list | None]:
        return self.delegate.call(args)


def config_for(values: Mapping[str, Any]) -> dict[str, str]:
    """Config the way the CLI hands it over: project-namespaced keys, JSON for lists."""
    result = {}
    for key, value in values.items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if isinstance(value, (list, dict)):
            result[full] = json.dumps(value)
        elif isinstance(value, bool):
            result[full] = "true" if value else "false"
        else:
            result[full] = str(value)
    return result


def declare(
    values: Mapping[str, Any],
    secret_keys: tuple[str, ...] = (),
    stack: str = "dev",
    preview: bool = False,
    mocks: pulumi.runtime.Mocks | None = None,
) -> Declaration:
    """Run __main__.py under mocks with the given config and return what it declared.

    `mocks` decides the providers' outputs: deterministic fakes by default; the e2e suite
    passes mocks that create each resource for real.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.settings.reset_options()

    recorder = _InputRecorder(mocks or Mocks())
    monitor = CapturingMonitor(recorder)
    logs: list[str] = []
    runtime_config.set_all_config(
        config_for(values), [k if ":" in k else f"{PROJECT}:{k}" for k in secret_keys]
    )
    pulumi.runtime.set_mocks(recorder, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    _patch_log(logs)

    def program() -> None:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")

    _sync_await(pulumi.runtime.stack.run_pulumi_func(program))
    stack_resource = pulumi.runtime.settings.get_root_resource()
    outputs = {key: _resolve(value) for key, value in getattr(stack_resource, "outputs", {}).items()}
    for registration in monitor.registrations:
        registration.inputs = recorder.inputs.get((registration.type, registration.name), {})
    return Declaration(resources=monitor.registrations, outputs=outputs, logs=logs)


def _resolve(value: Any) -> Any:
    """Resolve an exported Output to SecretValue / plain data."""
    output = pulumi.Output.from_input(value)

    async def get() -> Any:
        resolved = await output.future()
        secret = await output.is_secret()
        return SecretValue(resolved) if secret else resolved

    return _sync_await(get())


def _patch_log(sink: list[str]) -> None:
    def record(level: str):
        def log(msg: str, resource: Any = None, stream_id: Any = None, ephemeral: Any = None) -> None:
            sink.append(f"{level}: {msg}")

        return log

    pulumi.log.info = record("info")  # type: ignore[assignment]
    pulumi.log.warn = record("warn")  # type: ignore[assignment]
