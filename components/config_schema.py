"""Every config key of the program, declared once: name, type, default, secret flag, description.

This table is the source the rest derives from:
- `stack_config.py` reads the stack's config with it (types, defaults, secret marking),
- `KNOWN_KEYS` is its list of names,
- tests/test_config_reference.py checks the `config:` block of Pulumi.yaml and the README
  table against it, and `scripts/config-table` prints (or writes) that README table.

It also holds the program's one error type, `ConfigError`. Nothing here imports another
module of the project, so every module may import this one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import pulumi

PROJECT = "registry-stack"

ConfigType = Literal["string", "integer", "boolean", "array"]


class ConfigError(pulumi.RunError, ValueError):
    """A config value (or component argument) is invalid; the message names the key, the value
    and the fix, and never shows a secret.

    A `pulumi.RunError`: the Python language host prints only the message of a RunError and a
    traceback for any other exception (pulumi/pulumi sdk/python/cmd/pulumi-language-python-exec:
    `except pulumi.RunError as e: pulumi.log.error(str(e))`).
    """


@dataclass(frozen=True)
class Key:
    """One config key as Pulumi.yaml declares it."""

    name: str
    type: ConfigType
    default: Any
    description: str
    # The value holds a password or a private key: it must be stored with --secret.
    secret: bool = False
    # Element type of an array.
    items: ConfigType | None = None
    # Range of an integer, checked by the program (Pulumi.yaml has no way to say it).
    minimum: int | None = None
    maximum: int | None = None
    # Secret keys: what `pulumi config set --secret` takes, for the error that says how to set it.
    example: str = ""

    @property
    def ref(self) -> str:
        """`registry-stack:<name>`, as the CLI and the error messages name the key."""
        return f"{PROJECT}:{self.name}"

    @property
    def documented_description(self) -> str:
        """The description as Pulumi.yaml and the README show it: secrets say so first."""
        return f"(secret) {self.description}" if self.secret else self.description

    @property
    def cli_type(self) -> str:
        """The type as the CLI names it in its errors (`array<string>`, InferFullTypeName)."""
        return f"array<{self.items}>" if self.type == "array" else self.type

    def invalid(self, value: Any, fix: str) -> ConfigError:
        """`registry-stack:<key>=<value> is invalid: <fix>`, with **** for a secret's value."""
        shown = "****" if self.secret else repr(value)
        return ConfigError(f"{self.ref}={shown} is invalid: {fix}")

    def coerce(self, value: Any) -> Any:
        """The typed value of `value`, or the default for None.

        Accepts the text the engine hands the program (PULUMI_CONFIG holds strings, arrays
        as JSON) and typed values (component arguments); an integer must also be in range.
        """
        if value is None:
            return default(self.name)
        if self.type == "boolean":
            return self._boolean(value)
        if self.type == "integer":
            return self._integer(value)
        if self.type == "array":
            return self._string_list(value)
        if not isinstance(value, str):
            raise self.invalid(value, "expected a string")
        # Secrets are kept byte for byte (a private key keeps its final newline).
        return value if self.secret else value.strip()

    def _boolean(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise self.invalid(value, "expected true or false")

    def _integer(self, value: Any) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)  # a component argument from another language arrives as 8443.0
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            number = int(value.strip())
            if str(number) != value.strip():  # "007", "+5": not how a number is written
                number = None
        low = self.minimum if self.minimum is not None else -(2**63)
        high = self.maximum if self.maximum is not None else 2**63 - 1
        if number is None or not low <= number <= high:
            raise self.invalid(value, f"expected a whole number from {low} to {high}")
        return number

    def _string_list(self, value: Any) -> list[str]:
        items = value
        if isinstance(value, str):
            if value.strip() == "":
                return default(self.name)  # type: ignore[no-any-return]
            try:
                items = json.loads(value)
            except json.JSONDecodeError:
                items = value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise self.invalid(value, "expected a list of strings")
        return list(items)


def _array(name: str, default: list[str], description: str, secret: bool = False, example: str = "") -> Key:
    return Key(name, "array", default, description, secret=secret, items="string", example=example)


KEYS: tuple[Key, ...] = (
    Key("enableBuild", "boolean", True,
        "Run the build registry, which takes pushes from the users (basic auth)."),
    Key("enableCache", "boolean", True,
        "Run the cache registries, read-only pull-through mirrors of the upstreams for every Docker host."),
    Key("domain", "string", "",
        "DNS domain of the registry hostnames docker-build.<domain> and docker-cache.<domain>; "
        "empty means <stack>.internal.network."),
    Key("registryImage", "string", "registry:3.1.1",
        "Image of the registries (CNCF distribution 3.x; 2.8.x is still supported, its config is rendered for it)."),
    Key("frontImage", "string", "caddy:2.11.4",
        "Image of the TLS + basic-auth front (Caddy 2.x; the e2e suite runs 2.11)."),
    Key("herdImage", "string", "varnish:7.7",
        "Image of the herd tier in front of each cache (Varnish Cache 7.x): concurrent cold pulls of a blob "
        "cost one upstream fetch and stream to every waiting client (README \"Many clients, one new image\")."),
    Key("dataPath", "string", "",
        "Host folder holding build_data, cache_data and front_data; empty means named Docker volumes."),
    Key("retainData", "boolean", False,
        "Keep the build registry's and the front's data volumes when the stack is destroyed "
        "(pushed images, ACME account and certificates)."),
    Key("network", "string", "",
        "Name of an existing Docker network to join; empty means the stack creates registry-stack-<stack>."),
    Key("orchestrator", "string", "docker",
        'docker (one Docker host, containers) or swarm (a Docker Swarm: services on swarmNodes, the build registry '
        'replicated on buildStorage; README "More than one host").'),
    _array("swarmNodes", [],
           "Swarm nodes (hostnames as `docker node ls` shows them) that each run a front with host-mode ports, "
           "the caches and the agent on node-local volumes; required when orchestrator is swarm."),
    Key("buildReplicas", "integer", 1,
        "Tasks of the build registry (orchestrator swarm); more than 1 needs buildStorage.", minimum=1, maximum=32),
    Key("buildStorage", "string", "",
        'Object storage of the build registry, as "s3://<bucket>[/<prefix>]?region=<region>[&endpoint=<URL of an '
        'S3-compatible store>]"; empty means a volume (in swarm mode on swarmNodes[0]).'),
    Key("buildStorageCredentials", "string", "",
        '"<accessKey>:<secretKey>" for buildStorage; empty means the host\'s own (IAM role).', secret=True,
        example="'<accessKey>:<secretKey>'"),
    Key("buildCleanup", "string", "",
        'Garbage collection of the build registry: "" (off), "manual" (only on demand, registry-stack-cleanup now) '
        'or a daily UTC time "HH:MM": the build registry turns read-only for pushes (pulls keep working), deletes '
        "the tags the buildKeep* rules select and runs garbage-collect --delete-untagged (README \"Build-registry "
        'cleanup"); needs the build registry on a volume of a single Docker host.'),
    Key("buildKeepTags", "integer", 10,
        "Build cleanup keeps the newest this many tags of each repository, by push time (protected tags do not "
        "count).", minimum=1, maximum=100000),
    Key("buildKeepDays", "integer", 30,
        "Build cleanup keeps every tag pushed fewer than this many days ago.", minimum=0, maximum=36500),
    _array("buildProtectedTags", ["latest"],
           'Tags build cleanup never deletes, as globs ("latest", "v*", "release-*") or "<repository glob>:<tag '
           'glob>" ("team/*:stable"); * matches any characters, ? one.'),
    _array("upstreams", ["docker=https://registry-1.docker.io"],
           'Registries to cache, as "name=URL" with an optional ";ttl=168h" (registry 3.x only); each gets '
           "the hostname <name>-cache.<domain>, and the one named docker is the Docker Hub mirror for daemons."),
    _array("upstreamCredentials", [],
           'Credentials for upstreams as "name=username:password" entries; upstreams without an entry '
           "are read anonymously.", secret=True, example="'<upstream>=<username>:<password>'"),
    _array("prewarm", [],
           'Images every pulumi up pulls into the caches (README "Pre-warmed, pinned images"), as '
           '"upstream=repository:tag" or "upstream=repository@sha256:<digest>" with an optional ";pin=false"; '
           "pinned ones (the default) are never evicted by the size cap nor expired by the TTL."),
    Key("cacheMaxSize", "string", "",
        'Size cap of each cache\'s storage, such as "50GiB" or "500MiB" (B, KiB, MiB, GiB, TiB, or KB, MB, GB, '
        "TB; at least 1MiB); empty means no cap. Past it, the agent removes the least recently pulled images "
        "(pinned ones never) until the cache is under it again. On registry 3.x a cap turns the TTL off (ttl 0) "
        "unless an upstream sets ;ttl= itself; 2.8 still expires content 7 days after its fetch "
        '(README "The cache\'s size").'),
    Key("unifiedEndpoint", "boolean", False,
        "Serve registry.<domain> too, one authenticated hostname that takes pushes (to the build registry) "
        'and serves pulls of everything (see README "Unified endpoint").'),
    _array("users", [],
           'Basic-auth users of the build registry as "name:password" entries; required when enableBuild '
           "is true.", secret=True, example="'<name>:<password>'"),
    _array("cacheClientNetworks", [], "CIDR ranges allowed to read the cache anonymously; empty means any client."),
    Key("httpsPort", "integer", 443, "Host port the front publishes for HTTPS.", minimum=1, maximum=65535),
    Key("httpPort", "integer", 80,
        "Host port for ACME HTTP-01 challenges and HTTPS redirects (ACME modes only).", minimum=1, maximum=65535),
    Key("bindAddress", "string", "0.0.0.0", "Host address the front's ports bind to."),
    Key("hostAddress", "string", "127.0.0.1",
        "Address clients use to reach the front, for the hostsLine output."),
    Key("tlsMode", "string", "self-signed",
        "self-signed (private CA made by the stack), letsencrypt-staging or letsencrypt."),
    Key("acmeEmail", "string", "", "Contact email for the ACME account; required in the letsencrypt modes."),
    Key("acmeDirectoryUrl", "string", "",
        "ACME directory URL; empty means the one of tlsMode (Let's Encrypt staging or production)."),
    Key("acmeTrustedRootPem", "string", "",
        "PEM of a CA the front trusts when it talks to a private ACME server."),
    Key("certValidityDays", "integer", 365, "Validity of the self-signed leaf certificate, in days.",
        minimum=2, maximum=3650),
    Key("certEarlyRenewalDays", "integer", 30,
        "The self-signed leaf is renewed by the first pulumi up this many days before it expires.",
        minimum=1, maximum=3649),
    _array("mirrorHosts", [],
           'Docker hosts the DaemonMirror points at the cache (enableCache only), each "local" or '
           '"ssh://user@host[:port]?hostKey=<the host\'s public key, ssh-ed25519 AAAA...>" with optional flags '
           "&docker=false&containerd=true&podman=true&etcHosts=true|<ip>[,<ip>...]&sudo=true; an ssh host "
           "without hostKey is "
           'refused unless it opts out with insecureIgnoreHostKey=true (README "Host keys"); the hosts need python3.'),
    Key("mirrorSshPrivateKey", "string", "",
        "SSH private key (PEM or OpenSSH, no passphrase) for every ssh:// entry of mirrorHosts.", secret=True,
        example="< ~/.ssh/id_ed25519"),
    Key("daemonJsonPath", "string", "/etc/docker/daemon.json",
        "Path of dockerd's config file on the mirror hosts."),
    Key("agentImage", "string", "python:3.13-alpine",
        "Image of the agent beside the caches (python3 with its standard library); it turns a cache's unusable "
        "answers into registry errors a client can act on, such as 429 TOOMANYREQUESTS while the upstream "
        "rate-limits, and counts what the caches serve."),
    Key("metricsPort", "integer", 0,
        "Host port of the metrics endpoint (plain HTTP, docs/metrics.md): the Prometheus metrics of the front, "
        "every registry and the agent, and /stats for scripts/verify --stats; 0 means none.",
        minimum=0, maximum=65535),
    _array("metricsClientNetworks", [],
           "CIDR ranges allowed to read the metrics endpoint (anything else gets 403); required when metricsPort "
           "is set."),
)

BY_NAME: dict[str, Key] = {key.name: key for key in KEYS}
KNOWN_KEYS: tuple[str, ...] = tuple(BY_NAME)
SECRET_KEYS: frozenset[str] = frozenset(key.name for key in KEYS if key.secret)


def key(name: str) -> Key:
    return BY_NAME[name]


def default(name: str) -> Any:
    """The key's default, as Pulumi.yaml declares it (a fresh copy for lists)."""
    value = BY_NAME[name].default
    return list(value) if isinstance(value, list) else value


def ref(name: str) -> str:
    """`registry-stack:<name>`: how messages name a key (or `registry-stack:<name>[<i>]`)."""
    return f"{PROJECT}:{name}"


def is_secret(name: str) -> bool:
    """The one answer to "must this key be stored with --secret?"."""
    return name in SECRET_KEYS
