"""Feed the program config as the Pulumi CLI does, run it under mocks, capture what it declares.

Every test that gives the program config goes through here:

- `engine_config(values, secret_keys, stack)` builds what the real CLI hands a program for
  `pulumi preview`/`up`: the stack file's values, Pulumi.yaml's defaults for the keys the
  stack leaves unset, the CLI's own type check of every value before the program starts
  (raising `CliError` with the CLI's message), and the names of the secret keys.
- `settings(values, ...)` validates that config the way `__main__.py` does, without mocks.
- `declare(values, ...)` runs __main__.py in a fresh Pulumi runtime with it and returns a
  `Declaration`: every registered resource (type, name, parent, options, inputs) and the
  stack outputs. Secret values stay wrapped (`SecretValue`) so tests can tell a secret
  from plain text; `unwrap()` gives plain data for the e2e realizer.
- `run_like_language_host(values, ...)` runs it as pulumi-language-python-exec does and
  returns what that host would print when the program fails.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import runpy
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime
import pulumi.runtime.config as runtime_config
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.sync_await import _sync_await

from components import renderers

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
        elif token == "docker:index/container:Container" and args.inputs.get("attach"):
            # pulumi-docker waits for an attached container to exit and reports how it ended
            # (unknown in a preview); under these mocks the stack's verification passes.
            if not pulumi.runtime.is_dry_run():
                outputs.update(exitCode=0, containerLogs="")
        elif token == "random:index/randomId:RandomId":
            digest = hashlib.sha256(args.name.encode()).hexdigest()
            outputs["hex"] = digest[: 2 * int(args.inputs.get("byteLength", 16))]
            outputs["b64Std"] = base64.b64encode(bytes.fromhex(outputs["hex"])).decode()
        elif token == "random:index/randomPassword:RandomPassword":
            # Letters and digits (special=False), as long as asked, the same every run.
            digest = hashlib.sha256(args.name.encode()).hexdigest()
            outputs["result"] = (digest * 4)[: int(args.inputs.get("length", 16))]
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


# ---------------------------------------------------------------------------------------
# Config as the Pulumi CLI builds it (pulumi/pulumi, read 2026-12):
# - sdk/go/common/resource/config/object.go: a stack file value is a string, a scalar (bool,
#   number: kept as its JSON text), a `secure:` ciphertext, or a list/map of those; a key is
#   secret when ANY element is encrypted (object.Secure).
# - pkg/workspace/config.go mergeConfig: Pulumi.yaml defaults fill the keys the stack leaves
#   unset (createConfigValue: scalars as "%v" text, lists as JSON); keys without a default
#   must be set; then validateStackConfigValues checks every declared key, in sorted order:
#   `secret: true` keys must be encrypted, and the value must match the declared type
#   (sdk/go/common/workspace/project.go ValidateConfigValue). The first failure stops the
#   command with "validating stack config: ..." before the program runs.
# - plaintext.go marshalText: the program gets strings, structured values as compact JSON
#   from Go's json.Marshal (sorted keys, <, > and & escaped).
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encrypted:
    """A value set with `pulumi config set --secret` (`{secure: <ciphertext>}` in the stack file)."""

    value: str


class CliError(Exception):
    """The real CLI refused the stack's config before starting the program: its own message
    (the CLI prints it after "error: ")."""


@dataclass(frozen=True)
class EngineConfig:
    """What the program receives: PULUMI_CONFIG (full key -> text) and PULUMI_CONFIG_SECRET_KEYS."""

    config: dict[str, str]
    secret_keys: tuple[str, ...]

    @property
    def project_values(self) -> dict[str, str]:
        return {k.split(":", 1)[1]: v for k, v in self.config.items() if k.startswith(f"{PROJECT}:")}

    @property
    def project_secret_keys(self) -> frozenset[str]:
        return frozenset(k.split(":", 1)[1] for k in self.secret_keys if k.startswith(f"{PROJECT}:"))


@cache
def project_config() -> dict[str, dict[str, Any]]:
    """The `config:` block of Pulumi.yaml."""
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]


def stack_file_values(values: Mapping[str, Any], secret_keys: Iterable[str] = ()) -> dict[str, Any]:
    """Values as `pulumi config set` stores them in Pulumi.<stack>.yaml, under full keys.

    A key named in `secret_keys` is encrypted as `--secret` stores it: a string whole, a list
    entry by entry (`pulumi config set --secret --path 'users[0]' ...`). `Encrypted` marks
    single entries, for a list where only some were set with --secret.
    """
    secret = {_full_key(k) for k in secret_keys}
    return {_full_key(k): _encrypt(v) if _full_key(k) in secret else v for k, v in values.items()}


def engine_config(values: Mapping[str, Any], secret_keys: Iterable[str] = (), stack: str = "dev") -> EngineConfig:
    """The config the CLI gives the program for a stack file holding `values`, or the CLI's CliError."""
    _check_stack_name(stack)
    merged = stack_file_values(values, secret_keys)
    declared = project_config()
    missing = []
    for name, spec in declared.items():
        full = _full_key(name)
        if full not in merged:
            if "default" in spec:
                merged[full] = _default_text(spec["default"])
            else:
                missing.append(name)
    if missing:
        noun = "value" if len(missing) == 1 else "values"
        raise CliError(f"validating stack config: Stack '{stack}' is missing configuration {noun} "
                       f"{_format_missing(sorted(missing))}")
    for name in sorted(declared):
        _validate_stack_value(stack, name, declared[name], merged[_full_key(name)])
    return EngineConfig(
        config={key: _program_text(value) for key, value in merged.items()},
        secret_keys=tuple(sorted(key for key, value in merged.items() if _is_secure(value))),
    )


def settings(values: Mapping[str, Any], secret_keys: Iterable[str] = (), stack: str = "dev") -> Any:
    """The program's Settings for that stack file, as __main__.py validates the engine's config."""
    from components.settings import load_settings

    engine = engine_config(values, secret_keys, stack)
    return load_settings(engine.project_values, engine.project_secret_keys, stack)


def _full_key(key: str) -> str:
    return key if ":" in key else f"{PROJECT}:{key}"


def _encrypt(value: Any) -> Any:
    if isinstance(value, list):
        return [_encrypt(item) for item in value]
    if isinstance(value, dict):
        return {k: _encrypt(v) for k, v in value.items()}
    return value if isinstance(value, Encrypted) else Encrypted(_scalar_text(value))


def _is_secure(value: Any) -> bool:
    if isinstance(value, list):
        return any(_is_secure(item) for item in value)
    if isinstance(value, dict):
        return any(_is_secure(item) for item in value.values())
    return isinstance(value, Encrypted)


def _check_stack_name(stack: str) -> None:
    # pkg/backend/diy: stackNameAndProjectRegexp, the rule every backend applies.
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", stack):
        raise CliError("stack names may only contain alphanumeric, hyphens, underscores, or periods")


def _format_missing(keys: list[str]) -> str:
    if len(keys) == 1:
        return f"'{keys[0]}'"
    return ", ".join(f"'{k}'" for k in keys[:-1]) + f" and '{keys[-1]}'"


def _scalar_text(value: Any) -> str:
    """A scalar stack value's text (object.MarshalString: bools and numbers as JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _default_text(value: Any) -> Any:
    """createConfigValue: a scalar default becomes its "%v" text; a list stays structured."""
    return value if isinstance(value, (list, dict)) else _scalar_text(value)


def _decrypted(value: Any) -> Any:
    """The value with every ciphertext replaced by its plaintext."""
    if isinstance(value, list):
        return [_decrypted(item) for item in value]
    if isinstance(value, dict):
        return {k: _decrypted(v) for k, v in value.items()}
    return value.value if isinstance(value, Encrypted) else value


def _program_text(value: Any) -> str:
    if isinstance(value, (list, dict)):
        text = json.dumps(_decrypted(value), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        # Go's json.Marshal escapes these for HTML; json.loads reads them back the same.
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    if isinstance(value, Encrypted):
        return value.value
    return _scalar_text(value)


def _validate_stack_value(stack: str, name: str, spec: dict[str, Any], value: Any) -> None:
    if spec.get("secret") and not _is_secure(value):
        raise CliError(
            f"validating stack config: Stack '{stack}' with configuration key '{name}' must be encrypted as it's secret"
        )
    if "type" not in spec:
        return
    # Structured values are checked as Go decodes their JSON; scalars as their text.
    content = json.loads(json.dumps(_decrypted(value))) if isinstance(value, (list, dict)) else _program_text(value)
    if not _matches_type(spec["type"], spec.get("items"), content, structured=isinstance(value, (list, dict))):
        raise CliError(
            f"validating stack config: Stack '{stack}' with configuration key '{name}' "
            f"must be of type '{_full_type_name(spec['type'], spec.get('items'))}'"
        )


def _matches_type(type_name: str, items: dict[str, Any] | None, value: Any, structured: bool) -> bool:
    """ValidateConfigValue. Inside JSON every number is a float64, so a string check fails on it."""
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "integer":
        if isinstance(value, bool):
            return False
        if isinstance(value, (int, float)):
            return float(value) == math.trunc(float(value))
        return isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value) is not None  # strconv.Atoi
    if type_name == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if type_name == "object":
        return isinstance(value, dict)
    if not isinstance(value, list) or items is None:
        return False
    return all(_matches_type(items["type"], items.get("items"), item, structured) for item in value)


def _full_type_name(type_name: str, items: dict[str, Any] | None) -> str:
    if items is not None:
        return f"array<{_full_type_name(items['type'], items.get('items'))}>"
    return type_name


def declare(
    values: Mapping[str, Any],
    secret_keys: Iterable[str] = (),
    stack: str = "dev",
    preview: bool = False,
    mocks: pulumi.runtime.Mocks | None = None,
    program: Callable[[], None] | None = None,
) -> Declaration:
    """Run __main__.py under mocks with the config the CLI builds from `values`; return what it declared.

    `values` are the stack file's (typed as YAML gives them; `Encrypted` for single secret
    entries), `secret_keys` the keys set with --secret. A value the CLI refuses raises CliError.

    `mocks` decides the providers' outputs: deterministic fakes by default; the e2e suite
    passes mocks that create each resource for real. `program` replaces __main__.py (a
    program that uses the components through their args).
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.settings.reset_options()

    engine = engine_config(values, secret_keys, stack)  # the CLI's checks come before the program
    recorder = _InputRecorder(mocks or Mocks())
    monitor = CapturingMonitor(recorder)
    logs: list[str] = []
    runtime_config.set_all_config(engine.config, list(engine.secret_keys))
    pulumi.runtime.set_mocks(recorder, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    _patch_log(logs)

    def main() -> None:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")

    _sync_await(pulumi.runtime.stack.run_pulumi_func(program or main))
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


@dataclass
class LanguageHostRun:
    """How pulumi-language-python-exec ends a program: success, and what it logs as errors."""

    successful: bool
    errors: list[str]


def run_like_language_host(
    values: Mapping[str, Any], secret_keys: Iterable[str] = (), stack: str = "dev"
) -> LanguageHostRun:
    """Run __main__.py and handle its failure as the Python language host does.

    pulumi/pulumi sdk/python/cmd/pulumi-language-python-exec: `except pulumi.RunError as e:
    pulumi.log.error(str(e))`, `except Exception: pulumi.log.error(traceback.format_exc())`.
    The program's exception reaches it unchanged (runtime/stack.py run_pulumi_func re-raises it).
    """
    try:
        declare(values, secret_keys=secret_keys, stack=stack)
    except pulumi.RunError as error:
        return LanguageHostRun(successful=False, errors=[str(error)])
    except Exception:
        return LanguageHostRun(successful=False, errors=[traceback.format_exc()])
    return LanguageHostRun(successful=True, errors=[])


# ---------------------------------------------------------------------------------------
# Shared by several test modules (so that no test module imports another)
# ---------------------------------------------------------------------------------------

MATRIX_USER_PASSWORD = "Ci-Pa55word-7f3a"
RENDER_USERS = ["alice:correct-horse-1", "bob:battery-staple-2"]
RENDER_SEED = "5eed0001c0ffee42a1b2c3d4e5f60718"
FAST_BCRYPT_COST = 4  # bcrypt's minimum cost: same algorithm, fast tests


def stack_file_config(stack: str) -> dict[str, Any]:
    """The project keys of Pulumi.<stack>.yaml, without the namespace."""
    data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    prefix = f"{PROJECT}:"
    return {k.removeprefix(prefix): v for k, v in (data.get("config") or {}).items() if k.startswith(prefix)}


def matrix_config(stack: str, build: bool, cache: bool) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A committed stack file with the two switches set (and a user when build is on)."""
    values = stack_file_config(stack)
    values["enableBuild"] = build
    values["enableCache"] = cache
    if build:
        values["users"] = [f"ci:{MATRIX_USER_PASSWORD}"]
        return values, ("users",)
    return values, ()


def render_settings(stack: str = "dev", **values: Any) -> Any:
    """Settings for the renderer tests: two users and the given keys, fed as the engine does."""
    config = {"users": RENDER_USERS, **values}
    return settings(config, {"users", "upstreamCredentials"} & set(config), stack)


def hashed_users(settings: Any) -> list[tuple[str, str]]:
    return [
        (name, renderers.bcrypt_hash(pw.reveal(), RENDER_SEED, name, cost=FAST_BCRYPT_COST))
        for name, pw in settings.users
    ]


def front_json(settings: Any) -> dict[str, Any]:
    """The front's rendered Caddy config, parsed."""
    text = renderers.front_config(settings, hashed_users(settings) if settings.enable_build else [])
    return json.loads(text)


def tls_server(config: dict[str, Any]) -> dict[str, Any]:
    """The TLS server of a front config: the one that serves the registry hostnames."""
    tls_servers = [s for s in config["apps"]["http"]["servers"].values() if ":443" in s["listen"]]
    assert len(tls_servers) == 1, "one TLS listener serves every hostname"
    return tls_servers[0]


def refusal_before_any_registration(program: Callable[[], None]) -> str:
    """Run `program` under mocks; it must raise ConfigError before one resource registers.

    Returns the error's message. The check that nothing registered is what makes "refused
    before any resource is created" a tested promise, not a hope."""
    global CapturingMonitor  # declare() builds its monitor from this module name
    from components.config_schema import ConfigError

    monitors: list[CapturingMonitor] = []

    class Recording(CapturingMonitor):
        def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
            super().__init__(mocks)
            monitors.append(self)

    original, CapturingMonitor = CapturingMonitor, Recording  # type: ignore[misc]
    try:
        declare({}, program=program)
    except ConfigError as caught:
        message = str(caught)
    else:
        raise AssertionError("the program was not refused")
    finally:
        CapturingMonitor = original  # type: ignore[misc]
    assert monitors and monitors[0].registrations == [], "refused before anything registers"
    return message
