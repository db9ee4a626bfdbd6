"""Every stack config key, read and validated in one place.

`load_settings` is a pure function of the raw config values (as Pulumi hands them to the
program) and the set of keys the stack marked secret, so it is tested without mocks.
`read_pulumi_config` gathers those raw values from the running Pulumi program.

Nothing here creates a resource: a bad value raises `ConfigError` before the program
declares anything, naming the key, the value and the fix.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import naming
from .upstreams import (
    DEFAULT_UPSTREAMS,
    DOCKER_HUB_URL,
    Upstream,
    UpstreamError,
    parse_credentials,
    parse_upstreams,
)

__all__ = ["DOCKER_HUB_URL", "ConfigError", "Secret", "Settings", "Upstream", "load_settings"]

if TYPE_CHECKING:  # for type hints only: mirror_settings itself imports this module
    from .mirror_settings import MirrorSettings

PROJECT = "registry-stack"

TLS_SELF_SIGNED = "self-signed"
TLS_LETSENCRYPT_STAGING = "letsencrypt-staging"
TLS_LETSENCRYPT = "letsencrypt"
TLS_MODES = (TLS_SELF_SIGNED, TLS_LETSENCRYPT_STAGING, TLS_LETSENCRYPT)
ACME_DIRECTORIES = {
    TLS_LETSENCRYPT_STAGING: "https://acme-staging-v02.api.letsencrypt.org/directory",
    TLS_LETSENCRYPT: "https://acme-v02.api.letsencrypt.org/directory",
}

DEFAULT_REGISTRY_IMAGE = "registry:3.1.1"
DEFAULT_FRONT_IMAGE = "caddy:2.8.4"

# The single source of truth for what keys exist; Pulumi.yaml declares the same keys with
# their types and descriptions, and tests/test_config_reference.py keeps the two in step.
KNOWN_KEYS = (
    "enableBuild",
    "enableCache",
    "domain",
    "registryImage",
    "frontImage",
    "dataPath",
    "retainData",
    "network",
    "upstreams",
    "upstreamCredentials",
    "unifiedEndpoint",
    "users",
    "cacheClientNetworks",
    "httpsPort",
    "httpPort",
    "bindAddress",
    "hostAddress",
    "tlsMode",
    "acmeEmail",
    "acmeDirectoryUrl",
    "acmeTrustedRootPem",
    "certValidityDays",
    "certEarlyRenewalDays",
    "mirrorHosts",
    "mirrorSshPrivateKey",
    "daemonJsonPath",
)

_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_USER_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_IMAGE_REF = re.compile(
    r"^[a-z0-9]+([._/:-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
_VERSION_TAG = re.compile(r":v?\d+[^/]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ConfigError(ValueError):
    """A stack config value is invalid; the message names the key, the value and the fix."""


class Secret:
    """A secret config value. Its repr never shows the value, so it cannot leak into logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The plain value: only for building a `pulumi.Output.secret` or hashing."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(****)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class TlsSettings:
    mode: str = TLS_SELF_SIGNED
    acme_email: str = ""
    acme_directory_url: str = ""
    acme_trusted_root_pem: str = ""
    cert_validity_days: int = 365
    cert_early_renewal_days: int = 30

    @property
    def is_acme(self) -> bool:
        return self.mode != TLS_SELF_SIGNED


@dataclass(frozen=True)
class Settings:
    """Typed, immutable view of one stack's config."""

    stack: str
    enable_build: bool
    enable_cache: bool
    domain: str
    registry_image: str
    front_image: str
    data_path: str
    external_network: str
    upstreams: tuple[Upstream, ...]
    users: tuple[tuple[str, Secret], ...]
    cache_client_networks: tuple[str, ...]
    https_port: int
    http_port: int
    bind_address: str
    host_address: str
    tls: TlsSettings = field(default_factory=TlsSettings)
    # Keep the build registry's and the front's volumes on `pulumi destroy` (stage, prod).
    retain_data: bool = False
    # One authenticated hostname for pushes and pulls of everything (registry.<domain>).
    unified_endpoint: bool = False
    # Docker hosts pointed at the cache (mirrorHosts...); set by load_settings, None when built by hand.
    mirror: MirrorSettings | None = None

    @property
    def names(self) -> naming.Names:
        """Every name of this stack's Docker objects and registries (components/naming.py)."""
        return naming.Names(self.stack, self.domain, self.https_port)

    @property
    def prefix(self) -> str:
        """Prefix of every Docker object name, so several stacks can share one engine."""
        return self.names.prefix

    @property
    def build_hostname(self) -> str:
        return self.names.build_hostname

    @property
    def upstream(self) -> Upstream:
        """The primary upstream: Docker Hub when listed, else the first (naming.primary)."""
        upstream = naming.primary(self.upstreams)
        assert upstream is not None, "load_settings refuses an empty upstreams list"
        return upstream

    @property
    def caches(self) -> tuple[Upstream, ...]:
        """The upstreams that get a cache registry: all of them while the cache is on."""
        return self.upstreams if self.enable_cache else ()

    @property
    def cache_hostname(self) -> str:
        """The primary cache's hostname (docker-cache.<domain> by default)."""
        return self.upstream.hostname(self.domain)

    @property
    def docker_hub_cache(self) -> Upstream | None:
        """The cache of Docker Hub (the upstream named docker), if the stack runs one."""
        return naming.docker_hub(self.caches)

    @property
    def unified_hostname(self) -> str:
        return self.names.unified_hostname

    @property
    def hostnames(self) -> tuple[str, ...]:
        """The public names the front serves, in a stable order."""
        names = []
        if self.enable_build:
            names.append(self.build_hostname)
        names.extend(upstream.hostname(self.domain) for upstream in self.caches)
        if self.unified_endpoint:
            names.append(self.unified_hostname)
        return tuple(names)

    @property
    def any_registry(self) -> bool:
        return self.enable_build or self.enable_cache

    @property
    def registry_major_version(self) -> int:
        return registry_major_version(self.registry_image)

    def url_for(self, hostname: str) -> str:
        """The https URL of a hostname, with the port only when it is not 443."""
        return self.names.url(hostname)

    def registry_address(self, hostname: str) -> str:
        """host[:port] as the Docker CLI and /etc/docker/certs.d name a registry."""
        return self.names.address(hostname)


def registry_major_version(image: str) -> int:
    """Major version of a distribution image from its tag (registry:3.0.0 -> 3); 2 otherwise."""
    tag = image.split("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]
    match = re.match(r"^v?(\d+)", tag)
    return int(match.group(1)) if match else 2


# ---------------------------------------------------------------------------------------
# Reading raw config
# ---------------------------------------------------------------------------------------


def read_pulumi_config() -> tuple[dict[str, Any], set[str], str]:
    """Raw values of this project's keys, the keys the stack holds as secrets, the stack name."""
    import pulumi
    import pulumi.runtime.config as runtime_config

    present = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    raw: dict[str, Any] = {}
    secret_keys: set[str] = set()
    for full_key in sorted(present):
        namespace, _, key = full_key.partition(":")
        if namespace != PROJECT:
            continue
        raw[key] = runtime_config.get_config(full_key)
        if runtime_config.is_config_secret(full_key) or full_key in set(
            runtime_config.get_config_secret_keys_env()
        ):
            secret_keys.add(key)
    return raw, secret_keys, pulumi.get_stack()


def load_settings(raw: Mapping[str, Any], secret_keys: set[str] | frozenset[str], stack: str) -> Settings:
    """Validate raw config (strings as Pulumi passes them, or typed values) into Settings."""
    reader = _Reader(raw, secret_keys)
    reader.reject_unknown_keys()
    stack = _validated_stack_name(stack)
    registry_image = reader.image("registryImage", DEFAULT_REGISTRY_IMAGE)

    settings = Settings(
        stack=stack,
        enable_build=reader.boolean("enableBuild", True),
        enable_cache=reader.boolean("enableCache", True),
        domain=reader.domain("domain", f"{stack}.internal.network"),
        registry_image=registry_image,
        front_image=reader.image("frontImage", DEFAULT_FRONT_IMAGE),
        data_path=reader.absolute_path("dataPath"),
        external_network=reader.docker_name("network"),
        upstreams=_read_upstreams(reader, registry_major_version(registry_image)),
        users=reader.users("users"),
        cache_client_networks=reader.networks("cacheClientNetworks"),
        https_port=reader.port("httpsPort", 443),
        http_port=reader.port("httpPort", 80),
        bind_address=reader.ip_address("bindAddress", "0.0.0.0"),
        host_address=reader.ip_address("hostAddress", "127.0.0.1"),
        tls=_read_tls(reader),
        retain_data=reader.boolean("retainData", False),
        unified_endpoint=reader.boolean("unifiedEndpoint", False),
    )
    _check_combinations(settings)
    return _with_mirror_settings(settings, raw, secret_keys)


def _with_mirror_settings(
    settings: Settings, raw: Mapping[str, Any], secret_keys: set[str] | frozenset[str]
) -> Settings:
    # Imported here, not at the top: mirror_settings builds on this module (ConfigError, Secret).
    from dataclasses import replace

    from .mirror_settings import read_mirror_settings

    return replace(settings, mirror=read_mirror_settings(raw, secret_keys, settings.host_address))


def _validated_stack_name(stack: str) -> str:
    name = stack.lower()
    if not _HOST_LABEL.match(name):
        raise ConfigError(
            f"stack name {stack!r} cannot name Docker objects or a DNS label: "
            "use letters, digits and '-' only (for example 'dev', 'stage', 'prod')"
        )
    return name


def _read_upstreams(reader: _Reader, registry_major: int) -> tuple[Upstream, ...]:
    try:
        upstreams = parse_upstreams(reader.string_list("upstreams", list(DEFAULT_UPSTREAMS)), registry_major)
        credentials = parse_credentials(reader.secret_list("upstreamCredentials"), upstreams)
    except UpstreamError as error:
        raise ConfigError(str(error)) from None
    return tuple(
        replace(u, username=credentials[u.name][0], password=Secret(credentials[u.name][1]))
        if u.name in credentials else u
        for u in upstreams
    )


def _read_tls(reader: _Reader) -> TlsSettings:
    mode = reader.choice("tlsMode", TLS_SELF_SIGNED, TLS_MODES)
    email = reader.string("acmeEmail", "")
    if email and not _EMAIL.match(email):
        raise ConfigError(
            f"{PROJECT}:acmeEmail={email!r} is not an email address: "
            "give the contact address Let's Encrypt should write to (name@example.com)"
        )
    if mode != TLS_SELF_SIGNED and not email:
        raise ConfigError(
            f"{PROJECT}:acmeEmail is required when tlsMode={mode!r}: "
            f"run `pulumi config set {PROJECT}:acmeEmail you@example.com`"
        )
    directory = reader.url("acmeDirectoryUrl", "", schemes=("https",))
    validity = reader.integer("certValidityDays", 365, minimum=2, maximum=3650)
    early = reader.integer("certEarlyRenewalDays", 30, minimum=1, maximum=3649)
    if early >= validity:
        raise ConfigError(
            f"{PROJECT}:certEarlyRenewalDays={early} must be smaller than "
            f"certValidityDays={validity}: otherwise every run would renew the certificate"
        )
    return TlsSettings(
        mode=mode,
        acme_email=email,
        acme_directory_url=directory or ACME_DIRECTORIES.get(mode, ""),
        acme_trusted_root_pem=reader.pem("acmeTrustedRootPem"),
        cert_validity_days=validity,
        cert_early_renewal_days=early,
    )


def _check_combinations(settings: Settings) -> None:
    if settings.unified_endpoint and not settings.enable_build:
        raise ConfigError(
            f"{PROJECT}:unifiedEndpoint is true but {PROJECT}:enableBuild is false: the unified "
            "endpoint takes pushes into the build registry. Enable the build registry, or set "
            "unifiedEndpoint false"
        )
    hostnames = list(settings.hostnames)
    for name in hostnames:
        if hostnames.count(name) > 1:
            raise ConfigError(
                f"two registries would share the hostname {name!r}: rename the upstream in "
                f"{PROJECT}:upstreams whose name makes it"
            )
    if settings.enable_build and not settings.users:
        raise ConfigError(
            f"{PROJECT}:users is empty but {PROJECT}:enableBuild is true: the build registry "
            "accepts pushes only from its users. Add one with "
            f"`pulumi config set --secret --path '{PROJECT}:users[0]' 'admin:<password>'`, "
            f"or set {PROJECT}:enableBuild false"
        )
    if settings.https_port == settings.http_port and settings.tls.is_acme:
        raise ConfigError(
            f"{PROJECT}:httpsPort and {PROJECT}:httpPort are both {settings.https_port}: "
            "the front needs two different host ports in ACME modes"
        )
    if settings.tls.is_acme and settings.http_port != 80 and "letsencrypt" in settings.tls.acme_directory_url:
        raise ConfigError(
            f"{PROJECT}:httpPort={settings.http_port} but Let's Encrypt validates HTTP-01 "
            "challenges on port 80 only: set httpPort to 80 (or point acmeDirectoryUrl at your own CA)"
        )


class _Reader:
    """Typed access to raw config values; every error names the key, the value and the fix."""

    def __init__(self, raw: Mapping[str, Any], secret_keys: set[str] | frozenset[str]) -> None:
        self._raw = {k: v for k, v in raw.items() if v is not None}
        self._secret_keys = frozenset(secret_keys)

    def reject_unknown_keys(self) -> None:
        unknown = sorted(set(self._raw) - set(KNOWN_KEYS))
        if unknown:
            raise ConfigError(
                f"unknown config key {PROJECT}:{unknown[0]}: the keys are "
                f"{', '.join(KNOWN_KEYS)} (see the config block of Pulumi.yaml); "
                f"remove it with `pulumi config rm {PROJECT}:{unknown[0]}`"
            )

    def _get(self, key: str) -> Any:
        return self._raw.get(key)

    def _fail(self, key: str, value: Any, fix: str) -> ConfigError:
        shown = "****" if key in self._secret_keys else repr(value)
        return ConfigError(f"{PROJECT}:{key}={shown} is invalid: {fix}")

    def string(self, key: str, default: str) -> str:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._fail(key, value, "expected a string")
        if key in self._secret_keys:
            raise ConfigError(f"{PROJECT}:{key} is not a secret setting: set it without --secret")
        return value.strip()

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise self._fail(key, value, "expected true or false")

    def integer(self, key: str, default: int, minimum: int, maximum: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        try:
            number = int(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or str(number) != str(value).strip():
            raise self._fail(key, value, f"expected a whole number from {minimum} to {maximum}")
        if not minimum <= number <= maximum:
            raise self._fail(key, value, f"expected a whole number from {minimum} to {maximum}")
        return number

    def port(self, key: str, default: int) -> int:
        return self.integer(key, default, minimum=1, maximum=65535)

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.string(key, default)
        if value not in allowed:
            raise self._fail(key, value, f"expected one of {', '.join(allowed)}")
        return value

    def domain(self, key: str, default: str) -> str:
        # The CLI hands Pulumi.yaml's default ("") to the program: empty means the default.
        value = (self.string(key, "") or default).lower().rstrip(".")
        labels = value.split(".")
        if len(value) > 240 or len(labels) < 2 or not all(_HOST_LABEL.match(label) for label in labels):
            raise self._fail(
                key, value, "expected a DNS domain such as dev.internal.network "
                "(labels of letters, digits and '-', at least two labels)"
            )
        return value

    def image(self, key: str, default: str) -> str:
        value = self.string(key, default)
        if not _IMAGE_REF.match(value):
            raise self._fail(key, value, "expected an image reference such as registry:2.8.3")
        if key == "registryImage" and not _VERSION_TAG.search(value.split("@", 1)[0]):
            # 2.x and 3.x read their config from different paths: the tag must say which.
            raise self._fail(
                key, value, "pin a version tag such as registry:2.8.3 or registry:3.0.0 "
                "(add @sha256:... to pin a digest too); 'latest' or no tag hides the major version"
            )
        return value

    def absolute_path(self, key: str) -> str:
        value = self.string(key, "")
        if value and (not value.startswith("/") or "\n" in value or ":" in value):
            raise self._fail(
                key, value, "expected an absolute host path such as /srv/registry, "
                "or empty for named Docker volumes"
            )
        return value.rstrip("/") if value != "/" else value

    def docker_name(self, key: str) -> str:
        value = self.string(key, "")
        if value and not _DOCKER_NAME.match(value):
            raise self._fail(key, value, "expected the name of an existing Docker network")
        return value

    def url(self, key: str, default: str, schemes: tuple[str, ...] = ("https", "http")) -> str:
        value = self.string(key, default).rstrip("/")
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            raise self._fail(key, value, f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return value

    def ip_address(self, key: str, default: str) -> str:
        value = self.string(key, default)
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise self._fail(key, value, "expected an IP address such as 127.0.0.1") from None
        return value

    def networks(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if value is None or value == "":
            return ()
        items = _as_json(value)
        if not isinstance(items, list):
            raise self._fail(key, value, 'expected a list of CIDR ranges, e.g. ["10.0.0.0/8"]')
        networks = []
        for item in items:
            try:
                networks.append(str(ipaddress.ip_network(str(item), strict=False)))
            except ValueError:
                raise self._fail(key, item, "expected a CIDR range such as 10.0.0.0/8") from None
        return tuple(networks)

    def string_list(self, key: str, default: list[str]) -> list[str]:
        value = self._get(key)
        if value is None or value == "":
            return default
        items = _as_json(value)
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise self._fail(key, value, "expected a list of strings")
        if key in self._secret_keys:
            raise ConfigError(f"{PROJECT}:{key} is not a secret setting: set it without --secret")
        return items

    def secret_list(self, key: str) -> list[str]:
        """A list whose entries hold secrets: the whole key must be a Pulumi secret."""
        value = self._get(key)
        if value is None or value == "" or value == "[]":
            return []
        if key not in self._secret_keys:
            raise ConfigError(
                f"{PROJECT}:{key} is stored in plain text: it must be a secret. Remove it "
                f"(`pulumi config rm {PROJECT}:{key}`) and add each entry with "
                f"`pulumi config set --secret --path '{PROJECT}:{key}[0]' <entry>`"
            )
        items = _as_json(value)
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ConfigError(f"{PROJECT}:{key}=**** is invalid: expected a list of strings")
        return items

    def pem(self, key: str) -> str:
        value = self.string(key, "")
        if value and "-----BEGIN CERTIFICATE-----" not in value:
            raise self._fail(key, value[:40], "expected a PEM certificate (-----BEGIN CERTIFICATE-----)")
        return value

    def secret(self, key: str) -> Secret | None:
        value = self._get(key)
        if value is None or value == "":
            return None
        if key not in self._secret_keys:
            raise ConfigError(
                f"{PROJECT}:{key} is stored in plain text: it must be a secret. Run "
                f"`pulumi config set --secret {PROJECT}:{key} <value>`"
            )
        if not isinstance(value, str):
            raise ConfigError(f"{PROJECT}:{key}=**** is invalid: expected a string")
        return Secret(value)

    def users(self, key: str) -> tuple[tuple[str, Secret], ...]:
        """`users` is a secret list of "name:password" entries."""
        value = self._get(key)
        if value is None or value == "" or value == "[]":
            return ()
        if key not in self._secret_keys:
            raise ConfigError(
                f"{PROJECT}:{key} holds passwords in plain text: it must be a secret. Remove it "
                f"(`pulumi config rm {PROJECT}:{key}`) and add each user with "
                f"`pulumi config set --secret --path '{PROJECT}:{key}[0]' '<name>:<password>'`"
            )
        entries = _as_json(value)
        if not isinstance(entries, list):
            raise ConfigError(
                f"{PROJECT}:{key}=**** is invalid: expected a list of \"name:password\" entries"
            )
        users: dict[str, Secret] = {}
        for index, entry in enumerate(entries):
            name, colon, password = str(entry).partition(":")
            if not colon or not _USER_NAME.match(name):
                raise ConfigError(
                    f"{PROJECT}:{key}[{index}]=**** is invalid: expected \"name:password\" with a "
                    "name of 1-64 letters, digits, '.', '_' or '-'"
                )
            if len(password) < 8:
                raise ConfigError(
                    f"{PROJECT}:{key}[{index}] (user {name!r}) has a password shorter than 8 "
                    "characters: choose a longer one"
                )
            if len(password.encode()) > 72:
                raise ConfigError(
                    f"{PROJECT}:{key}[{index}] (user {name!r}) has a password longer than 72 bytes, "
                    "bcrypt's limit: choose a shorter one"
                )
            if name in users:
                raise ConfigError(
                    f"{PROJECT}:{key} names user {name!r} twice: keep one entry per user"
                )
            users[name] = Secret(password)
        return tuple(sorted(users.items()))


def _as_json(value: Any) -> Any:
    """Pulumi hands object and array config to the program as JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
