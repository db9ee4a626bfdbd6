"""The stack's config as the Pulumi engine hands it to the program, checked before anything runs.

Before `pulumi preview`/`up` start the program, the CLI merges the defaults of Pulumi.yaml
into the stack's values and checks every value against its declared type (pulumi/pulumi
`pkg/workspace/config.go` validateStackConfigValues); the program then receives every
key as text in PULUMI_CONFIG (arrays as JSON) and the names of the secret keys. What the
CLI cannot know is checked here, each against the table of config_schema.py:

- a key of this project's namespace that the program does not know (a typo such as
  `httpsport` would otherwise be ignored): an error naming the closest known key;
- a key whose namespace looks like a misspelling of this project's (`registry-stak:domain`):
  a warning, since the key may belong to something else;
- secret marking: a key holding passwords must be a Pulumi secret, and a key that holds
  none must not be one (its value would be hidden from every message for nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from .args import RegistryStackArgs
from .config_schema import KEYS, KNOWN_KEYS, PROJECT, ConfigError, is_secret, key, ref


@dataclass(frozen=True)
class StackConfig:
    """This project's keys (without the namespace) as the engine passed them, and which are secret."""

    values: dict[str, Any]
    secret_keys: frozenset[str]
    stack: str
    # Every key the stack has, of any namespace ("docker:host", "registry-stak:domain", ...).
    all_keys: tuple[str, ...] = ()


def registry_stack_args(config: StackConfig | None = None) -> RegistryStackArgs:
    """The running stack's config as RegistryStack's args, after the checks only stack config needs.

    Warns (pulumi.log.warn) about keys whose namespace looks like a misspelling of this project's.
    """
    import pulumi

    config = config or read_stack_config()
    for warning in misspelt_namespace_warnings(config.all_keys):
        pulumi.log.warn(warning)
    return cast(RegistryStackArgs, check_stack_config(config.values, config.secret_keys))


def read_stack_config() -> StackConfig:
    """The running program's config, from the Pulumi runtime (PULUMI_CONFIG and its secret keys)."""
    import pulumi
    import pulumi.runtime.config as runtime_config

    present = sorted(set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env()))
    secret_env = set(runtime_config.get_config_secret_keys_env())
    values: dict[str, Any] = {}
    secret_keys: set[str] = set()
    for full_key in present:
        namespace, _, name = full_key.partition(":")
        if namespace != PROJECT:
            continue
        values[name] = runtime_config.get_config(full_key)
        if runtime_config.is_config_secret(full_key) or full_key in secret_env:
            secret_keys.add(name)
    return StackConfig(values, frozenset(secret_keys), pulumi.get_stack(), tuple(present))


def check_stack_config(values: Mapping[str, Any], secret_keys: Iterable[str]) -> dict[str, Any]:
    """Refuse unknown keys and wrong secret marking; return every key's typed value (defaults filled in)."""
    present = {name: value for name, value in values.items() if value is not None}
    _reject_unknown_keys(present)
    secret = frozenset(secret_keys)
    for name in KNOWN_KEYS:
        _check_secret_marking(name, present.get(name), name in secret)
    return {spec.name: spec.coerce(present.get(spec.name)) for spec in KEYS}


def misspelt_namespace_warnings(full_keys: Iterable[str]) -> list[str]:
    """One warning per key whose namespace is nearly this project's (`registry-stak:domain`)."""
    warnings = []
    for full_key in full_keys:
        namespace, colon, name = full_key.partition(":")
        if colon and namespace != PROJECT and _looks_like(namespace, PROJECT):
            meant = f"{PROJECT}:{name}" if name in KNOWN_KEYS else f"a {PROJECT}: key"
            warnings.append(
                f"config key {full_key!r} is ignored: its namespace {namespace!r} is not this project's "
                f"{PROJECT!r}. If you meant {meant}, move the value with "
                f"`pulumi config rm '{full_key}'` and `pulumi config set '{PROJECT}:{name}' <value>`"
            )
    return warnings


def _reject_unknown_keys(values: Mapping[str, Any]) -> None:
    unknown = sorted(set(values) - set(KNOWN_KEYS))
    if not unknown:
        return
    name = unknown[0]
    closest = _closest_known_key(name)
    hint = f"did you mean {ref(closest)}? " if closest else ""
    raise ConfigError(
        f"unknown config key {ref(name)}: {hint}the keys are {', '.join(KNOWN_KEYS)} (see the config "
        f"block of Pulumi.yaml); remove it with `pulumi config rm {ref(name)}`"
    )


def _check_secret_marking(name: str, value: Any, marked_secret: bool) -> None:
    """The one check of secret marking, for every key."""
    if is_secret(name):
        if not marked_secret and not _is_empty(value):
            raise ConfigError(_plain_text_message(name))
    elif marked_secret:
        raise ConfigError(f"{ref(name)} is not a secret setting: set it without --secret")


def _plain_text_message(name: str) -> str:
    spec = key(name)
    holds = "holds passwords in plain text" if name == "users" else "is stored in plain text"
    if spec.type == "array":
        how = f"add each entry with `pulumi config set --secret --path '{spec.ref}[0]' {spec.example}`"
    else:
        how = f"run `pulumi config set --secret {spec.ref} {spec.example}`"
    return f"{spec.ref} {holds}: it must be a secret. Remove it (`pulumi config rm {spec.ref}`) and {how}"


def _is_empty(value: Any) -> bool:
    return value is None or value in ("", "[]", [])


def _closest_known_key(name: str) -> str:
    """The known key nearest to `name`, at most 2 edits away (as the CLI suggests attributes)."""
    scored = sorted((_edit_distance(name.lower(), known.lower()), known) for known in KNOWN_KEYS)
    distance, known = scored[0]
    return known if distance <= 2 else ""


def _looks_like(namespace: str, project: str) -> bool:
    folded = namespace.lower().replace("_", "-")
    return folded.replace("-", "") == project.replace("-", "") or _edit_distance(folded, project) <= 2


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]
