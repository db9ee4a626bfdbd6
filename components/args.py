"""The components' typed arguments: RegistryStackArgs, TlsArgs, and the TLS modes.

Each field of RegistryStackArgs is a config key of the program, under the same name, so an
error names the key in both worlds (`registry-stack:httpsPort=...` for a stack's config
and for a program that passes `httpsPort`). Types, defaults and descriptions are those of
components/config_schema.py (tests/test_component_args.py holds the two together); a field
left out takes the key's default. The components validate their args before creating any
child, with the errors stack config gets.

Pulumi's Python component host infers the package schema from these TypedDicts, reading the
string literal under each field as its description (pulumi/pulumi
sdk/python/lib/pulumi/provider/experimental/analyzer.py); it cannot read string annotations,
so this module does not use `from __future__ import annotations`.
"""

from collections.abc import Sequence
from enum import Enum
from typing import NotRequired, TypedDict

import pulumi


class TlsMode(str, Enum):  # noqa: UP042 (the form Pulumi's schema analyzer documents for enums)
    """How the front gets its certificate."""

    SELF_SIGNED = "self-signed"
    """A private CA and leaf certificate made by the stack (output caCertPem)."""
    LETSENCRYPT_STAGING = "letsencrypt-staging"
    """Let's Encrypt's staging CA, for tests: browsers and Docker do not trust it."""
    LETSENCRYPT = "letsencrypt"
    """Let's Encrypt production certificates, obtained and renewed by the front."""


class RegistryStackArgs(TypedDict):
    """Everything one stack runs: the build registry, the caches, the front, the DaemonMirrors."""

    enableBuild: NotRequired[pulumi.Input[bool]]
    """Run the build registry, which takes pushes from the users (basic auth)."""
    enableCache: NotRequired[pulumi.Input[bool]]
    """Run the cache registries, read-only pull-through mirrors of the upstreams for every Docker host."""
    domain: NotRequired[pulumi.Input[str]]
    (
        "DNS domain of the registry hostnames docker-build.<domain> and docker-cache.<domain>; empty "
        "means <stack>.internal.network."
    )
    registryImage: NotRequired[pulumi.Input[str]]
    """Image of the registries (CNCF distribution 3.x; 2.8.x is still supported, its config is rendered for it)."""
    frontImage: NotRequired[pulumi.Input[str]]
    """Image of the TLS + basic-auth front (Caddy 2.x; the e2e suite runs 2.11)."""
    herdImage: NotRequired[pulumi.Input[str]]
    (
        "Image of the herd tier in front of each cache (Varnish Cache 7.x): concurrent cold pulls of a "
        "blob cost one upstream fetch and stream to every waiting client (README \"Many clients, one new "
        "image\")."
    )
    dataPath: NotRequired[pulumi.Input[str]]
    """Host folder holding build_data, cache_data and front_data; empty means named Docker volumes."""
    retainData: NotRequired[pulumi.Input[bool]]
    (
        "Keep the build registry's and the front's data volumes when the stack is destroyed (pushed "
        "images, ACME account and certificates)."
    )
    network: NotRequired[pulumi.Input[str]]
    """Name of an existing Docker network to join; empty means the stack creates registry-stack-<stack>."""
    orchestrator: NotRequired[pulumi.Input[str]]
    (
        "docker (one Docker host, containers) or swarm (a Docker Swarm: services on swarmNodes, the build "
        "registry replicated on buildStorage; README \"More than one host\")."
    )
    swarmNodes: NotRequired[pulumi.Input[Sequence[pulumi.Input[str]]]]
    (
        "Swarm nodes (hostnames as `docker node ls` shows them) that each run a front with host-mode "
        "ports, the caches and the agent on node-local volumes; required when orchestrator is swarm."
    )
    buildReplicas: NotRequired[pulumi.Input[int]]
    """Tasks of the build registry (orchestrator swarm); more than 1 needs buildStorage."""
    buildStorage: NotRequired[pulumi.Input[str]]
    (
        "Object storage of the build registry, as "
        "\"s3://<bucket>[/<prefix>]?region=<region>[&endpoint=<URL of an S3-compatible store>]\"; empty "
        "means a volume (in swarm mode on swarmNodes[0])."
    )
    buildStorageCredentials: NotRequired[pulumi.Input[str]]
    """(secret) "<accessKey>:<secretKey>" for buildStorage; empty means the host's own (IAM role)."""
    buildCleanup: NotRequired[pulumi.Input[str]]
    (
        "Garbage collection of the build registry: \"\" (off), \"manual\" (only on demand, "
        "registry-stack-cleanup now) or a daily UTC time \"HH:MM\": the build registry turns read-only for "
        "pushes (pulls keep working), deletes the tags the buildKeep* rules select and runs "
        "garbage-collect --delete-untagged (README \"Build-registry cleanup\"); needs the build registry on "
        "a volume of a single Docker host."
    )
    buildKeepTags: NotRequired[pulumi.Input[int]]
    """Build cleanup keeps the newest this many tags of each repository, by push time (protected tags do not count)."""
    buildKeepDays: NotRequired[pulumi.Input[int]]
    """Build cleanup keeps every tag pushed fewer than this many days ago."""
    buildProtectedTags: NotRequired[pulumi.Input[Sequence[pulumi.Input[str]]]]
    (
        "Tags build cleanup never deletes, as globs (\"latest\", \"v*\", \"release-*\") or \"<repository "
        "glob>:<tag glob>\" (\"team/*:stable\"); * matches any characters, ? one."
    )
    upstreams: NotRequired[pulumi.Input[Sequence[pulumi.Input[str]]]]
    (
        "Registries to cache, as \"name=URL\" with an optional \";ttl=168h\" (registry 3.x only); each gets "
        "the hostname <name>-cache.<domain>, and the one named docker is the Docker Hub mirror for "
        "daemons."
    )
    upstreamCredentials: NotRequired[pulumi.Input[Sequence[pulumi.Input[str]]]]
    (
        "(secret) Credentials for upstreams as \"name=username:password\" entries; upstreams without an "
        "entry are read anonymously."
    )
    prewarm: NotRequired[pulumi.Input[Sequence[pulumi.Input[str]]]]
    (
        "Images every pulumi up pulls into the caches (README \"Pre-warmed, pinned images\"), as "
        "\"upstream=repository:tag\" or \"upstream=repository@sha256:<digest>\" with an optional "
        "\";pin=false\"; pinned ones (the default) are never evicted by the size cap nor expired by the "
        "TTL."
    )
    cacheMaxSize: NotRequired[pulumi.Input[str]]
    (
        "Size cap of each cache's storage, such as \"50GiB\" or \"500MiB\" (B, KiB, MiB, GiB, TiB, or KB, MB, "
        "GB, TB; at least 1MiB); empty means no cap. Past it, the agent removes the least recently pulled "
        "images (pinned ones never) until the cache is under it again. On registry 3.x a cap turns the "
        "TTL off (ttl 0) unless an upstream sets ;ttl= itself; 2.8 still expires content 7 days after its "
        "fetch (README \"The cache's size\")."
    )
    unifiedEndpoint: NotRequired[pulumi.Input[bool]]
    (
        "Serve registry.<domain> too, one authenticated hostname that takes pushes (to the build "
        "registry) and serves pulls of everything (see README \"Unified endpoint\")."
    )
    users: NotRequired[pulumi.Input[Sequence[pulumi.Input[str]]]]
    """(secret) Basic-auth users of the build registry as "name:password" entries; required when enableBuild is true."""
    cacheClientNetworks: NotRequired[pulumi.Input[Sequence[pulumi.Input[str]]]]
    """CIDR ranges allowed to read the cache anonymously; empty means any client."""
    httpsPort: NotRequired[pulumi.Input[int]]
    """Host port the front publishes for HTTPS."""
    httpPort: NotRequired[pulumi.Input[int]]
    """Host port for ACME HTTP-01 challenges and HTTPS redirects (ACME modes only)."""
    bindAddress: NotRequired[pulumi.Input[str]]
    """Host address the front's ports bind to."""
    hostAddress: NotRequired[pulumi.Input[str]]
    """Address clients use to reach the front, for the hostsLine output."""
    tlsMode: NotRequired[pulumi.Input[TlsMode]]
    """self-signed (private CA made by the stack), letsencrypt-staging or letsencrypt."""
    acmeEmail: NotRequired[pulumi.Input[str]]
    """Contact email for the ACME account; required in the letsencrypt modes."""
    acmeDirectoryUrl: NotRequired[pulumi.Input[str]]
    """ACME directory URL; empty means the one of tlsMode (Let's Encrypt staging or production)."""
    acmeTrustedRootPem: NotRequired[pulumi.Input[str]]
    """PEM of a CA the front trusts when it talks to a private ACME server."""
    certValidityDays: NotRequired[pulumi.Input[int]]
    """Validity of the self-signed leaf certificate, in days."""
    certEarlyRenewalDays: NotRequired[pulumi.Input[int]]
    """The self-signed leaf is renewed by the first pulumi up this many days before it expires."""
    mirrorHosts: NotRequired[pulumi.Input[Sequence[pulumi.Input[str]]]]
    (
        "Docker hosts the DaemonMirror points at the cache (enableCache only), each \"local\" or "
        "\"ssh://user@host[:port]?hostKey=<the host's public key, ssh-ed25519 AAAA...>\" with optional "
        "flags &docker=false&containerd=true&podman=true&etcHosts=true|<ip>[,<ip>...]&sudo=true; an ssh "
        "host without hostKey is refused unless it opts out with insecureIgnoreHostKey=true (README \"Host "
        "keys\"); the hosts need python3."
    )
    mirrorSshPrivateKey: NotRequired[pulumi.Input[str]]
    """(secret) SSH private key (PEM or OpenSSH, no passphrase) for every ssh:// entry of mirrorHosts."""
    daemonJsonPath: NotRequired[pulumi.Input[str]]
    """Path of dockerd's config file on the mirror hosts."""
    agentImage: NotRequired[pulumi.Input[str]]
    (
        "Image of the agent beside the caches (python3 with its standard library); it turns a cache's "
        "unusable answers into registry errors a client can act on, such as 429 TOOMANYREQUESTS while the "
        "upstream rate-limits, and counts what the caches serve."
    )
    metricsPort: NotRequired[pulumi.Input[int]]
    (
        "Host port of the metrics endpoint (plain HTTP, docs/metrics.md): the Prometheus metrics of the "
        "front, every registry and the agent, and /stats for scripts/verify --stats; 0 means none."
    )
    metricsClientNetworks: NotRequired[pulumi.Input[Sequence[pulumi.Input[str]]]]
    """CIDR ranges allowed to read the metrics endpoint (anything else gets 403); required when metricsPort is set."""


class TlsArgs(TypedDict):
    """The front's certificate: made by the stack (self-signed) or left to the front (ACME)."""

    hostnames: pulumi.Input[Sequence[pulumi.Input[str]]]
    """The names the certificate covers; the first is its common name."""
    caCommonName: NotRequired[pulumi.Input[str]]
    """Common name of the self-signed CA; default "registry-stack CA"."""
    tlsMode: NotRequired[pulumi.Input[TlsMode]]
    """self-signed (private CA made by the stack), letsencrypt-staging or letsencrypt."""
    certValidityDays: NotRequired[pulumi.Input[int]]
    """Validity of the self-signed leaf certificate, in days."""
    certEarlyRenewalDays: NotRequired[pulumi.Input[int]]
    """The self-signed leaf is renewed by the first pulumi up this many days before it expires."""


class MirroredCacheArgs(TypedDict):
    """One cached upstream a Docker host is pointed at."""

    upstreamUrl: pulumi.Input[str]
    """The registry the cache mirrors, such as https://registry-1.docker.io (Docker Hub) or https://ghcr.io."""
    cacheUrl: pulumi.Input[str]
    """The cache's https URL, such as https://docker-cache.dev.internal.network:8443 (RegistryStack's cacheUrls)."""


class DaemonMirrorArgs(TypedDict):
    """One Docker host pointed at a stack's caches (RegistryStack makes one per mirrorHosts entry)."""

    host: pulumi.Input[str]
    (
        "The host, as a mirrorHosts entry: \"local\" or \"ssh://user@host[:port]?hostKey=<the host's "
        "public key, ssh-ed25519 AAAA...>\", with optional flags &docker=false&containerd=true&podman=true"
        "&etcHosts=true|<ip>[,<ip>...]&sudo=true; an ssh host without hostKey is refused unless it opts out with "
        "insecureIgnoreHostKey=true."
    )
    caches: pulumi.Input[Sequence[pulumi.Input[MirroredCacheArgs]]]
    (
        "The cached upstreams the host pulls through; the first is dockerd's registry mirror (which "
        "serves Docker Hub names only), containerd and podman get every one."
    )
    stackId: NotRequired[pulumi.Input[str]]
    (
        "Names this stack's record, podman drop-in and /etc/hosts lines on the host, so several stacks "
        "can share one; default registry-stack-<stack>."
    )
    hostnames: NotRequired[pulumi.Input[Sequence[pulumi.Input[str]]]]
    """The registry names the etcHosts flag maps to the registry host's address (RegistryStack's hostnames)."""
    hostAddress: NotRequired[pulumi.Input[str]]
    """The registry host's address that etcHosts=true maps the names to; default 127.0.0.1."""
    caCertPem: NotRequired[pulumi.Input[str]]
    """PEM of the CA the host must trust (RegistryStack's caCertPem, self-signed mode); none for public certificates."""
    sshPrivateKey: NotRequired[pulumi.Input[str]]
    """(secret) SSH private key (PEM or OpenSSH, no passphrase) for an ssh:// host."""
    daemonJsonPath: NotRequired[pulumi.Input[str]]
    """Path of dockerd's config file on the host; default /etc/docker/daemon.json."""
