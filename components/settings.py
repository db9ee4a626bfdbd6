"""The stack's settings: every config key validated into one typed, immutable `Settings`.

`settings_from_values` is a pure function of the keys' values (as config_schema.py declares
them; the engine's text or typed values) and the stack name, so it is tested without
mocks. `load_settings` adds the checks only stack config needs (stack_config.py: unknown
keys, secret marking) in front of it, for values as the engine hands them to the program.

Nothing here creates a resource: a bad value raises `ConfigError` before the program
declares anything, naming the key, the value and the fix.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import pulumi

from . import naming
from .cache_size import parse_size
from .cleanup_settings import CleanupSettings, read_cleanup
from .config_schema import KNOWN_KEYS, PROJECT, ConfigError, key, ref
from .mirror_settings import PLACEHOLDER_KEY, MirrorSettings, read_mirror_settings
from .prewarm_settings import PrewarmImage, parse_prewarm, with_pins
from .secret import Secret
from .stack_config import check_stack_config
from .swarm_settings import Topology, read_topology
from .upstreams import DOCKER_HUB_URL, Upstream, parse_credentials, parse_upstreams

__all__ = [
    "DOCKER_HUB_URL",
    "KNOWN_KEYS",
    "PROJECT",
    "ConfigError",
    "Secret",
    "Settings",
    "Upstream",
    "load_settings",
    "settings_from_values",
]

TLS_SELF_SIGNED = "self-signed"
TLS_LETSENCRYPT_STAGING = "letsencrypt-staging"
TLS_LETSENCRYPT = "letsencrypt"
TLS_MODES = (TLS_SELF_SIGNED, TLS_LETSENCRYPT_STAGING, TLS_LETSENCRYPT)
ACME_DIRECTORIES = {
    TLS_LETSENCRYPT_STAGING: "https://acme-staging-v02.api.letsencrypt.org/directory",
    TLS_LETSENCRYPT: "https://acme-v02.api.letsencrypt.org/directory",
}

# A container's hostname (here also its name) is one DNS label: at most 63 characters.
MAX_HOSTNAME = 63

_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_USER_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_IMAGE_REF = re.compile(
    r"^[a-z0-9]+([._/:-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
_VERSION_TAG = re.compile(r":v?\d+[^/]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class TlsSettings:
    """The TLS keys (tlsMode, acme*, cert*); their defaults live in config_schema.py only."""

    mode: str
    acme_email: str
    acme_directory_url: str
    acme_trusted_root_pem: str
    cert_validity_days: int
    cert_early_renewal_days: int

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
    herd_image: str
    data_path: str
    external_network: str
    upstreams: tuple[Upstream, ...]
    users: tuple[tuple[str, Secret], ...]
    cache_client_networks: tuple[str, ...]
    https_port: int
    http_port: int
    bind_address: str
    host_address: str
    tls: TlsSettings
    # Keep the build registry's and the front's volumes on `pulumi destroy` (stage, prod).
    retain_data: bool
    # One authenticated hostname for pushes and pulls of everything (registry.<domain>).
    unified_endpoint: bool
    # Docker hosts pointed at the cache (mirrorHosts, mirrorSshPrivateKey, daemonJsonPath).
    mirror: MirrorSettings
    # Image of the agent beside the caches (components/agent_app: python3, standard library only).
    agent_image: str = "python:3.13-alpine"
    # The metrics endpoint (components/metrics.py): host port (0: none) and who may read it.
    metrics_port: int = 0
    metrics_client_networks: tuple[str, ...] = ()
    # One Docker host (containers) or a swarm (services), and the build registry's storage.
    topology: Topology = field(default_factory=Topology)
    # Build-registry cleanup: schedule and retention rules (components/build_cleanup.py).
    cleanup: CleanupSettings = field(default_factory=CleanupSettings)
    # Images every `pulumi up` pulls into the caches (`prewarm`); the pinned ones are also in
    # their upstream's `pins`.
    prewarm: tuple[PrewarmImage, ...] = ()
    # Swarm mode: the node these settings render for (`for_node`); empty for the whole stack.
    node: str = ""
    # Secret keys passed as Outputs (secrets from a program in another language): their value
    # is known only at apply time, where `users_of` / `credentials_of` check it.
    deferred: Mapping[str, pulumi.Output[Any]] = field(default_factory=dict)

    @property
    def names(self) -> naming.Names:
        """Every name of this stack's Docker objects and registries (components/naming.py)."""
        return naming.Names(self.stack, self.domain, self.https_port, self.node)

    def for_node(self, node: str) -> Settings:
        """The settings as one swarm node's services see them: its own front, caches and agent."""
        return replace(self, node=node)

    def scopes(self) -> tuple[Settings, ...]:
        """What runs a front and caches: the whole stack on one host, or each swarm node."""
        if self.topology.is_swarm:
            return tuple(self.for_node(node) for node in self.topology.nodes)
        return (self,)

    @property
    def front_sees_build_storage(self) -> bool:
        """The build registry's storage is a volume on the front's host (not a bucket, not a swarm)."""
        return self.topology.build_storage is None and not self.topology.is_swarm

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
    def writes_access_log(self) -> bool:
        """The front logs its requests for the agent: pulls per image (metrics), last pulls (the size cap)."""
        return bool(self.metrics_port) or any(u.max_bytes for u in self.caches)

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
# From config (or component arguments) to Settings
# ---------------------------------------------------------------------------------------


def load_settings(raw: Mapping[str, Any], secret_keys: Iterable[str], stack: str) -> Settings:
    """Validate config as the engine hands it to the program (text, arrays as JSON) into Settings."""
    return settings_from_values(check_stack_config(raw, secret_keys), stack)


def settings_from_values(values: Mapping[str, Any], stack: str) -> Settings:
    """Validate the keys' values (text or typed; a missing key takes its default) into Settings."""
    deferred = _deferred_secrets(values)
    read = _Values({name: value for name, value in values.items() if name not in deferred})
    stack = _validated_stack_name(stack)
    registry_image = _image("registryImage", read("registryImage"))
    upstreams = _read_upstreams(read, registry_major_version(registry_image), read("enableCache"))
    prewarm = parse_prewarm(read("prewarm"), upstreams)
    host_address = _ip_address("hostAddress", read("hostAddress"))
    settings = Settings(
        stack=stack,
        enable_build=read("enableBuild"),
        enable_cache=read("enableCache"),
        domain=_domain(read("domain") or f"{stack}.internal.network"),
        registry_image=registry_image,
        front_image=_image("frontImage", read("frontImage")),
        herd_image=_image("herdImage", read("herdImage")),
        data_path=_absolute_path("dataPath", read("dataPath")),
        external_network=_docker_name("network", read("network")),
        upstreams=with_pins(upstreams, prewarm),
        prewarm=prewarm,
        users=_users(read("users")),
        cache_client_networks=_networks("cacheClientNetworks", read("cacheClientNetworks")),
        https_port=read("httpsPort"),
        http_port=read("httpPort"),
        bind_address=_ip_address("bindAddress", read("bindAddress")),
        host_address=host_address,
        tls=_read_tls(read),
        retain_data=read("retainData"),
        unified_endpoint=read("unifiedEndpoint"),
        # etcHosts=true on a mirror host maps the registry names to the validated hostAddress.
        mirror=read_mirror_settings(
            read("mirrorHosts"),
            PLACEHOLDER_KEY if "mirrorSshPrivateKey" in deferred else read("mirrorSshPrivateKey"),
            read("daemonJsonPath"), host_address,
        ),
        agent_image=_image("agentImage", read("agentImage")),
        metrics_port=read("metricsPort"),
        metrics_client_networks=_networks("metricsClientNetworks", read("metricsClientNetworks")),
        topology=read_topology(
            read("orchestrator"), read("swarmNodes"), read("buildReplicas"), read("buildStorage"),
            read("buildStorageCredentials"),
        ),
        cleanup=read_cleanup(
            read("buildCleanup"), read("buildKeepTags"), read("buildKeepDays"), read("buildProtectedTags")
        ),
        deferred=deferred,
    )
    _check_combinations(settings)
    _check_container_hostnames(settings)
    return settings


# Secret keys a program may pass as Outputs; the SSH key goes to the DaemonMirrors as it came.
DEFERRABLE = ("users", "upstreamCredentials", "mirrorSshPrivateKey")


def _deferred_secrets(values: Mapping[str, Any]) -> dict[str, pulumi.Output[Any]]:
    """The deferrable keys given as Outputs, as secret Outputs of their whole value."""
    return {
        name: pulumi.Output.secret(pulumi.Output.from_input(values[name]))
        for name in DEFERRABLE
        if _holds_output(values.get(name))
    }


def users_of(settings: Settings, value: Any) -> tuple[tuple[str, Secret], ...]:
    """`users` known at apply time, checked as it is up front (an error fails the deployment)."""
    users = _users(key("users").coerce(value))
    if settings.enable_build and not users:
        _check_combinations(replace(settings, users=(), deferred={}))
    return users


def credentials_of(settings: Settings, value: Any) -> dict[str, tuple[str, str]]:
    """`upstreamCredentials` known at apply time, checked as it is up front."""
    return parse_credentials(key("upstreamCredentials").coerce(value), settings.upstreams)


class _Values:
    """`read(name)`: the key's typed value (config_schema's type, range and default)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        unknown = sorted(set(values) - set(KNOWN_KEYS))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r}: the settings are {', '.join(KNOWN_KEYS)}")
        self._values = values

    def __call__(self, name: str) -> Any:
        value = self._values.get(name)
        if _holds_output(value):
            raise ConfigError(
                f"{ref(name)} is an Output: RegistryStack checks every setting before it creates anything, "
                f"so it needs the plain value (only the secrets {', '.join(DEFERRABLE)} may be Outputs)"
            )
        if isinstance(value, Enum):
            value = value.value
        return key(name).coerce(value)


def _holds_output(value: Any) -> bool:
    if isinstance(value, pulumi.Output):
        return True
    return isinstance(value, (list, tuple)) and any(isinstance(item, pulumi.Output) for item in value)


def _validated_stack_name(stack: str) -> str:
    name = stack.lower()
    if not _HOST_LABEL.match(name):
        raise ConfigError(
            f"stack name {stack!r} cannot name Docker objects or a DNS label: "
            "use letters, digits and '-' only (for example 'dev', 'stage', 'prod')"
        )
    return name


def _read_upstreams(read: _Values, registry_major: int, enable_cache: bool) -> tuple[Upstream, ...]:
    upstreams = parse_upstreams(read("upstreams"), registry_major)
    credentials = parse_credentials(read("upstreamCredentials"), upstreams)
    with_credentials = tuple(
        replace(u, username=credentials[u.name][0], password=Secret(credentials[u.name][1]))
        if u.name in credentials else u
        for u in upstreams
    )
    return _capped(with_credentials, read("cacheMaxSize"), registry_major, enable_cache)


# `proxy.ttl: 0` turns distribution 3.x's expiry off: "TTL is disabled, never expire", no
# scheduler at all (registry/proxy/proxyregistry.go, `*config.TTL > 0`; configuration.md:
# "set to 0 to disable cache expiration").
TTL_OFF = "0s"


def _capped(
    upstreams: tuple[Upstream, ...], size: str, registry_major: int, enable_cache: bool
) -> tuple[Upstream, ...]:
    """Each cache capped at cacheMaxSize; on 3.x the cap replaces the TTL unless `;ttl=` is set.

    Why the TTL goes: it deletes content a fixed time after its fetch, however often it is
    pulled since and even while the upstream is down (a hit does not refresh it). With a cap,
    what leaves is what is least used, only when room is needed. An upstream's own `;ttl=`
    still applies beside the cap (both remove). 2.8 hard-codes 7 days and cannot be turned off.
    """
    cap = parse_size(size)
    if not cap:
        return upstreams
    if not enable_cache:
        raise ConfigError(
            f"{ref('cacheMaxSize')}={size!r} but {ref('enableCache')} is false: there is no cache to cap. "
            "Remove cacheMaxSize, or set enableCache true"
        )
    return tuple(
        replace(u, max_bytes=cap, ttl=u.ttl or (TTL_OFF if registry_major >= 3 else "")) for u in upstreams
    )


def _read_tls(read: _Values) -> TlsSettings:
    mode = read("tlsMode")
    if mode not in TLS_MODES:
        raise key("tlsMode").invalid(mode, f"expected one of {', '.join(TLS_MODES)}")
    email = read("acmeEmail")
    if email and not _EMAIL.match(email):
        raise ConfigError(
            f"{ref('acmeEmail')}={email!r} is not an email address: "
            "give the contact address Let's Encrypt should write to (name@example.com)"
        )
    if mode != TLS_SELF_SIGNED and not email:
        raise ConfigError(
            f"{ref('acmeEmail')} is required when tlsMode={mode!r}: "
            f"run `pulumi config set {ref('acmeEmail')} you@example.com`"
        )
    directory = _url("acmeDirectoryUrl", read("acmeDirectoryUrl"), schemes=("https",))
    validity, early = read("certValidityDays"), read("certEarlyRenewalDays")
    if early >= validity:
        raise ConfigError(
            f"{ref('certEarlyRenewalDays')}={early} must be smaller than "
            f"certValidityDays={validity}: otherwise every run would renew the certificate"
        )
    return TlsSettings(
        mode=mode,
        acme_email=email,
        acme_directory_url=directory or ACME_DIRECTORIES.get(mode, ""),
        acme_trusted_root_pem=_pem("acmeTrustedRootPem", read("acmeTrustedRootPem")),
        cert_validity_days=validity,
        cert_early_renewal_days=early,
    )


def _check_metrics(settings: Settings) -> None:
    if not settings.metrics_port:
        return
    if not settings.metrics_client_networks:
        raise ConfigError(
            f"{ref('metricsPort')}={settings.metrics_port} but {ref('metricsClientNetworks')} is empty: the "
            "metrics endpoint is plain HTTP and open only to listed networks. Add the Prometheus server's "
            f"network with `pulumi config set --path '{ref('metricsClientNetworks')}[0]' 10.0.0.0/24`, "
            "or set metricsPort 0"
        )
    taken = {settings.https_port: "httpsPort"} | ({settings.http_port: "httpPort"} if settings.tls.is_acme else {})
    if settings.metrics_port in taken:
        raise ConfigError(
            f"{ref('metricsPort')}={settings.metrics_port} is already {ref(taken[settings.metrics_port])}: "
            "choose another host port for the metrics endpoint (for example 9100)"
        )


def _check_swarm(settings: Settings) -> None:
    if not settings.topology.is_swarm:
        return
    if settings.bind_address != "0.0.0.0":
        raise ConfigError(
            f"{ref('bindAddress')}={settings.bind_address!r} with {ref('orchestrator')}=swarm: a swarm publishes "
            "a host-mode port on every address of its node. Remove bindAddress (or firewall the node)"
        )
    if settings.data_path:
        raise ConfigError(
            f"{ref('dataPath')}={settings.data_path!r} names folders of one host, but {ref('orchestrator')}=swarm "
            "keeps each node's data in that node's named volumes (the build registry's in buildStorage): "
            "remove dataPath"
        )


def _check_cleanup(settings: Settings) -> None:
    """The cleanup runs in the build container on its own volume, and the front must see that volume."""
    schedule = settings.cleanup.schedule
    if not schedule:
        return
    where = f"{ref('buildCleanup')}={schedule!r}"
    if not settings.enable_build:
        raise ConfigError(
            f"{where} but {ref('enableBuild')} is false: there is no build registry to clean. "
            "Remove buildCleanup, or enable the build registry"
        )
    if settings.topology.is_swarm:
        raise ConfigError(
            f"{where} with {ref('orchestrator')}=swarm: the cleanup swaps the build registry's process inside one "
            "container and the fronts of the other nodes cannot see its volume. Remove buildCleanup in swarm mode "
            "for now"
        )
    if settings.topology.build_storage is not None:
        raise ConfigError(
            f"{where} with {ref('buildStorage')} set: the cleanup reads the tags' push times from the build "
            "registry's volume, and a bucket has none. Remove buildCleanup (use the bucket's own lifecycle rules), "
            "or keep the build registry on a volume"
        )


def _check_prewarm(settings: Settings) -> None:
    if not settings.prewarm:
        return
    if not settings.enable_cache:
        raise ConfigError(
            f"{ref('prewarm')} lists {len(settings.prewarm)} image(s) but {ref('enableCache')} is false: there is "
            "no cache to pre-warm. Set enableCache true, or remove prewarm"
        )
    if settings.topology.is_swarm:
        raise ConfigError(
            f"{ref('prewarm')} with {ref('orchestrator')}=swarm is not supported yet (each node's caches would "
            "need their own pre-warm run and pins file): remove prewarm, or use orchestrator docker"
        )


def _check_combinations(settings: Settings) -> None:
    _check_metrics(settings)
    _check_cleanup(settings)
    _check_prewarm(settings)
    _check_swarm(settings)
    _check_swarm_hostnames(settings)
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
    if settings.enable_build and not settings.users and "users" not in settings.deferred:
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


def _check_swarm_hostnames(settings: Settings) -> None:
    """A node-bound service's name is `<prefix>-<role>-<node>`, also a hostname (63 characters at most)."""
    for scoped in settings.scopes():
        if not scoped.node:
            continue
        for role in [u.standby_role for u in scoped.caches] + [naming.FRONT]:
            hostname = scoped.names.container(role)
            if len(hostname) > MAX_HOSTNAME:
                raise ConfigError(
                    f"{ref('swarmNodes')} names node {scoped.node!r}, which makes the service hostname "
                    f"{hostname!r} {len(hostname)} characters long, more than the {MAX_HOSTNAME} a hostname may "
                    "have: use shorter node hostnames, upstream names or stack name"
                )


def _check_container_hostnames(settings: Settings) -> None:
    """Every container's name is also its hostname, which Docker refuses beyond 63 characters."""
    fixed_roles = [role for role, on in (("build", settings.enable_build), ("front", settings.any_registry)) if on]
    fixed_roles += [u.standby_role for u in settings.caches if u.is_docker_hub]
    longest_fixed = max(fixed_roles, key=len, default="")
    if longest_fixed and len(f"{settings.prefix}-{longest_fixed}") > MAX_HOSTNAME:
        room = MAX_HOSTNAME - len(f"{PROJECT}--{longest_fixed}")
        raise ConfigError(
            f"stack name {settings.stack!r} is too long: the container hostname "
            f"'{settings.prefix}-{longest_fixed}' would have {len(settings.prefix) + 1 + len(longest_fixed)} "
            f"characters, more than the {MAX_HOSTNAME} a hostname may have. Use a stack name of at most "
            f"{room} characters"
        )
    for index, upstream in enumerate(settings.caches):
        hostname = f"{settings.prefix}-{upstream.standby_role}"
        if len(hostname) > MAX_HOSTNAME:
            room = MAX_HOSTNAME - len(f"{settings.prefix}-{upstream.standby_role.removeprefix(upstream.name)}")
            fix = (
                f"shorten the upstream name to at most {room} characters"
                if room > 0 else "the stack name leaves no room for an upstream name: use a shorter stack name"
            )
            raise ConfigError(
                f"{ref('upstreams')}[{index}] names upstream {upstream.name!r}, which makes the container "
                f"hostname {hostname!r} {len(hostname)} characters long, more than the {MAX_HOSTNAME} a "
                f"hostname may have: {fix} (or use a shorter stack name than {settings.stack!r})"
            )


# ---------------------------------------------------------------------------------------
# One check per kind of value; every error names the key, the value and the fix
# ---------------------------------------------------------------------------------------


def _domain(value: str) -> str:
    domain = value.lower().rstrip(".")
    labels = domain.split(".")
    if len(domain) > 240 or len(labels) < 2 or not all(_HOST_LABEL.match(label) for label in labels):
        raise key("domain").invalid(
            domain, "expected a DNS domain such as dev.internal.network "
            "(labels of letters, digits and '-', at least two labels)"
        )
    return domain


def _image(name: str, value: str) -> str:
    if not _IMAGE_REF.match(value):
        raise key(name).invalid(value, "expected an image reference such as registry:2.8.3")
    if name == "registryImage" and not _VERSION_TAG.search(value.split("@", 1)[0]):
        # 2.x and 3.x read their config from different paths: the tag must say which.
        raise key(name).invalid(
            value, "pin a version tag such as registry:2.8.3 or registry:3.0.0 "
            "(add @sha256:... to pin a digest too); 'latest' or no tag hides the major version"
        )
    return value


def _absolute_path(name: str, value: str) -> str:
    if value and (not value.startswith("/") or "\n" in value or ":" in value):
        raise key(name).invalid(
            value, "expected an absolute host path such as /srv/registry, or empty for named Docker volumes"
        )
    return value.rstrip("/") if value != "/" else value


def _docker_name(name: str, value: str) -> str:
    if value and not _DOCKER_NAME.match(value):
        raise key(name).invalid(value, "expected the name of an existing Docker network")
    return value


def _url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    url = value.rstrip("/")
    if not url:
        return url
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise key(name).invalid(url, f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}")
    return url


def _ip_address(name: str, value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise key(name).invalid(value, "expected an IP address such as 127.0.0.1") from None
    return value


def _networks(name: str, items: list[str]) -> tuple[str, ...]:
    networks = []
    for item in items:
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise key(name).invalid(item, "expected a CIDR range such as 10.0.0.0/8") from None
    return tuple(networks)


def _pem(name: str, value: str) -> str:
    if value and "-----BEGIN CERTIFICATE-----" not in value:
        raise key(name).invalid(value[:40], "expected a PEM certificate (-----BEGIN CERTIFICATE-----)")
    return value


def _users(entries: list[str]) -> tuple[tuple[str, Secret], ...]:
    """`users` is a secret list of "name:password" entries; no message shows a password."""
    users: dict[str, Secret] = {}
    for index, entry in enumerate(entries):
        name, colon, password = entry.partition(":")
        entry_ref = f"{ref('users')}[{index}]"
        if not colon or not _USER_NAME.match(name):
            raise ConfigError(
                f"{entry_ref}=**** is invalid: expected \"name:password\" with a "
                "name of 1-64 letters, digits, '.', '_' or '-'"
            )
        if len(password) < 8:
            raise ConfigError(
                f"{entry_ref} (user {name!r}) has a password shorter than 8 characters: choose a longer one"
            )
        if len(password.encode()) > 72:
            raise ConfigError(
                f"{entry_ref} (user {name!r}) has a password longer than 72 bytes, "
                "bcrypt's limit: choose a shorter one"
            )
        if name in users:
            raise ConfigError(f"{ref('users')} names user {name!r} twice: keep one entry per user")
        users[name] = Secret(password)
    return tuple(sorted(users.items()))
