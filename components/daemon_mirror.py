"""DaemonMirror: point one Docker host at the stack's cache, and take it back on destroy.

One pulumi-command `Command` per host (`local.Command` for `local`, `remote.Command` over
SSH otherwise) runs components/host_scripts/daemon_mirror_host.py, sent over stdin:
`python3 - apply '<args>'` on create, `python3 - remove '<args>'` on delete. The script
merges the cache into daemon.json's `registry-mirrors`, installs the CA (self-signed mode),
optionally writes containerd's hosts.toml and /etc/hosts lines, and reloads dockerd; its
docstring has the details. The hosts need python3 (3.7 or later) and root (or `sudo=true`).

SSH hosts are verified: the connection carries the entry's `hostKey` (see `ssh_connection`);
only an entry that opts out (`insecureIgnoreHostKey=true`) goes without, with a warning.
`local` commands carry the machine that runs the program (`machine`): pulumi-command runs
them, their delete included, wherever the CLI runs, and the host script refuses to run on
any other machine.

Replacement: everything the host gets (args, connection) is a trigger, and the old
command's `remove` runs before the new `apply` (delete_before_replace): otherwise the old
remove, run last, would undo the new configuration.

Args: `DaemonMirrorArgs` (components/args.py), plain values a program in any language can
pass: the host entry in the `mirrorHosts` form, parsed and checked here with the errors
stack config gets, the cache URLs, the CA, the SSH key. `mirror_plan` checks them all before
anything registers and turns them into a `MirrorPlan`, which the pure functions below render.
No `from __future__ import annotations`: Pulumi's component host reads the annotation of
`args` at runtime (analyzer.py).
"""

import copy
import ipaddress
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pulumi
import pulumi_command as command

from . import client_configs, naming
from .args import DaemonMirrorArgs, MirroredCacheArgs
from .config_schema import PROJECT, ConfigError, default
from .host_scripts.daemon_mirror_host import this_machine
from .mirror_settings import (
    DEFAULT_DAEMON_JSON_PATH,
    PLACEHOLDER_KEY,
    MirrorHost,
    read_mirror_settings,
    read_private_key,
)
from .secret import Secret
from .settings import DOCKER_HUB_URL, TLS_LETSENCRYPT_STAGING, Settings

if TYPE_CHECKING:
    from .registry_stack import RegistryStack

HOST_SCRIPT = Path(__file__).resolve().parent / "host_scripts" / "daemon_mirror_host.py"
DOCKER_HUB_HOSTS = ("registry-1.docker.io", "index.docker.io", "docker.io")


@dataclass(frozen=True)
class HostPaths:
    """Where things live on a host. Defaults are the standard locations; tests use temp folders."""

    daemon_json: str = DEFAULT_DAEMON_JSON_PATH
    docker_certs_d: str = "/etc/docker/certs.d"
    containerd_certs_d: str = "/etc/containerd/certs.d"
    containerd_config: str = "/etc/containerd/config.toml"
    # podman, CRI-O, buildah, skopeo (containers-registries.conf.d(5), containers-certs.d(5))
    containers_registries_d: str = "/etc/containers/registries.conf.d"
    containers_certs_d: str = "/etc/containers/certs.d"
    etc_hosts: str = "/etc/hosts"
    # The record of what was changed, with the original bytes restored on removal.
    state_dir: str = "/var/lib/registry-stack"


@dataclass(frozen=True)
class MirrorPlan:
    """What one host needs to use the cache: DaemonMirrorArgs, checked and parsed (`mirror_plan`)."""

    host: MirrorHost
    """The parsed `mirrorHosts` entry: local or ssh, and its flags."""
    stack_id: str
    """Names this stack's record and /etc/hosts lines on the host (several stacks may share one)."""
    cache_url: str
    """The cache's root URL, as daemon.json's `registry-mirrors` lists it."""
    cache_address: str
    """host[:port] of the cache, as /etc/docker/certs.d names its folder."""
    upstream_url: str
    """The registry the cache mirrors: containerd's hosts.toml is written for it."""
    more_caches: tuple[tuple[str, str, str], ...] = ()
    """Other cached upstreams for containerd: (upstream URL, cache URL, cache host[:port])."""
    hostnames: tuple[str, ...] = ()
    """The registry names that `etcHosts` maps to the registry host's address."""
    ca_cert_pem: pulumi.Input[str | None] | None = None
    """The CA the hosts must trust (self-signed mode); None when the certificate is public."""
    ssh_private_key: Secret | pulumi.Output[str] | None = None
    """For ssh hosts; reaches the provider only as a Pulumi secret (an Output is checked when known)."""
    paths: HostPaths = field(default_factory=HostPaths)
    reload: str = "auto"
    """auto (systemctl reload docker, else SIGHUP to dockerd), none, or pid:<n> (tests)."""
    machine: dict[str, str] | None = None
    """For `local`: the machine running this program (host script `this_machine`). The host
    script refuses to apply or remove anywhere else (a destroy from another machine)."""


# ---------------------------------------------------------------------------------------
# Pure functions: what the host gets
# ---------------------------------------------------------------------------------------


def containerd_registry_folder(upstream_url: str) -> str:
    """containerd's certs.d folder of the upstream: `docker.io` for Docker Hub, else host[:port]."""
    return client_configs.registry_name(upstream_url)


def containerd_server(upstream_url: str) -> str:
    """The upstream containerd falls back to when the cache fails."""
    parts = urlsplit(upstream_url)
    if (parts.hostname or "") in DOCKER_HUB_HOSTS:
        return DOCKER_HUB_URL
    return f"{parts.scheme}://{parts.netloc}"


def containerd_hosts_toml(upstream_url: str, cache_url: str, ca_path: str | None) -> str:
    """hosts.toml (containerd's certs.d format) that sends pulls of the upstream to the cache first."""
    lines = [
        "# Written by the registry-stack DaemonMirror, removed on destroy: pulls try the cache",
        "# first and fall back to the registry itself (server).",
        f"server = {_toml_string(containerd_server(upstream_url))}",
        "",
        f"[host.{_toml_string(cache_url)}]",
        '  capabilities = ["pull", "resolve"]',
    ]
    if ca_path:
        lines.append(f"  ca = {_toml_string(ca_path)}")
    return "\n".join(lines) + "\n"


def _toml_string(value: str) -> str:
    # A JSON string (quotes, backslash escapes) is a valid TOML basic string.
    return json.dumps(value, ensure_ascii=False)


def etc_hosts_line(addresses: Sequence[str], hostnames: Sequence[str]) -> str:
    """One `<address> <names>` line per address, the preferred first (mirror_settings.MirrorHost)."""
    return "\n".join(f"{address} {' '.join(hostnames)}" for address in addresses)


def _caches(args: MirrorPlan) -> list[client_configs.CachedRegistry]:
    """Every cached upstream this host is pointed at, the primary (dockerd's mirror) first."""
    caches = ((args.upstream_url, args.cache_url, args.cache_address), *args.more_caches)
    return [
        client_configs.CachedRegistry(
            registry=containerd_registry_folder(upstream_url), upstream_url=upstream_url,
            cache_url=cache_url, cache_address=cache_address,
        )
        for upstream_url, cache_url, cache_address in caches
    ]


def docker_store_args(args: MirrorPlan, ca_cert_pem: str | None) -> dict[str, Any]:
    """The files only some dockerd image stores read; the host script picks by what it finds.

    Measured on Docker 28.5.2 with the containerd image store (tests/e2e/test_hosts_daemon_mirror.py):
    - it reads /etc/docker/certs.d/<registry>/hosts.toml for ANY registry on every pull, so
      every cached upstream gets one, Docker Hub (`docker.io`) included;
    - it does not verify the TLS certificate of a `registry-mirrors` mirror at all (a
      mirror pulls with no CA anywhere), while hosts.toml's `ca` is verified: a docker.io
      hosts.toml, which takes precedence over registry-mirrors, makes Hub pulls verified.
    - The mirror's CA also goes to certs.d/docker.io/: moby gives registry-mirrors the TLS
      settings of docker.io's folder (daemon/hosts.go), which is what a containerd store
      without hosts.toml support (Docker 26/27) has to go on.
    """
    paths = args.paths
    containerd_store_files = []
    if ca_cert_pem:
        containerd_store_files.append({"path": f"{paths.docker_certs_d}/docker.io/ca.crt", "content": ca_cert_pem})
    hosts_toml = [
        {
            "registry": cache.registry,
            "cache": cache.cache_url,
            "path": f"{paths.docker_certs_d}/{cache.registry}/hosts.toml",
            "content": containerd_hosts_toml(
                cache.upstream_url, cache.cache_url,
                f"{paths.docker_certs_d}/{cache.cache_address}/ca.crt" if ca_cert_pem else None,
            ),
        }
        for cache in _caches(args)
    ]
    return {"containerd_store_files": containerd_store_files, "hosts_toml": hosts_toml}


def host_script_args(args: MirrorPlan, ca_cert_pem: str | None) -> dict[str, Any]:
    """The JSON the host script gets: every file it manages, with its content."""
    host, paths = args.host, args.paths
    files: list[dict[str, str]] = []
    caches = _caches(args)
    if host.docker and ca_cert_pem:
        # Every cache's CA under its own name: dockerd's mirror, explicit pulls of
        # <name>-cache.<domain>/..., and the hosts.toml files point here.
        files += [{"path": f"{paths.docker_certs_d}/{c.cache_address}/ca.crt", "content": ca_cert_pem} for c in caches]
    if host.containerd:
        # containerd, unlike dockerd, mirrors any registry: one hosts.toml per cached upstream.
        for cache in caches:
            containerd_ca = f"{paths.containerd_certs_d}/{cache.cache_address}/ca.crt"
            if ca_cert_pem:
                files.append({"path": containerd_ca, "content": ca_cert_pem})
            files.append({
                "path": f"{paths.containerd_certs_d}/{cache.registry}/hosts.toml",
                "content": containerd_hosts_toml(
                    cache.upstream_url, cache.cache_url, containerd_ca if ca_cert_pem else None
                ),
            })
    if host.podman:
        if ca_cert_pem:
            files += [
                {"path": f"{paths.containers_certs_d}/{c.cache_address}/ca.crt", "content": ca_cert_pem} for c in caches
            ]
        files.append({
            "path": f"{paths.containers_registries_d}/{podman_drop_in_name(args.stack_id)}",
            "content": client_configs.podman_registries_conf(caches),
        })
    return {
        "id": args.stack_id,
        "machine": args.machine if host.is_local else None,
        "state_dir": paths.state_dir,
        "reload": args.reload,
        "daemon_json": {"path": paths.daemon_json, "mirror": args.cache_url} if host.docker else None,
        "docker_store": docker_store_args(args, ca_cert_pem) if host.docker else None,
        # containerd reads hosts.toml only with config_path set (2.1's default is ''): the host sets it.
        "containerd_config": (
            {"path": paths.containerd_config, "certs_d": paths.containerd_certs_d} if host.containerd else None
        ),
        "files": files,
        "etc_hosts": (
            {"path": paths.etc_hosts, "line": etc_hosts_line(host.etc_hosts_addresses, args.hostnames)}
            if host.etc_hosts_addresses and args.hostnames
            else None
        ),
    }


def podman_drop_in_name(stack_id: str) -> str:
    """Drop-ins are read in alphanumeric order and a later [[registry]] of the same prefix
    wins: 50- leaves room for a site's own files before (defaults) and after (overrides)."""
    return f"50-{stack_id}.conf"


def script_command(action: str, script_args: dict[str, Any], sudo: bool = False) -> str:
    """The shell command that runs the script (read from stdin) with its args."""
    prefix = "sudo -n " if sudo else ""
    return f"{prefix}python3 - {action} {shlex.quote(json.dumps(script_args, sort_keys=True))}"


def configured_summary(script_args: dict[str, Any]) -> dict[str, Any]:
    """The per-host output: what the host is configured with, in plain words."""
    daemon_json = script_args["daemon_json"]
    etc_hosts = script_args["etc_hosts"]
    return {
        "registryMirror": daemon_json["mirror"] if daemon_json else None,
        "daemonJson": daemon_json["path"] if daemon_json else None,
        "files": [entry["path"] for entry in script_args["files"]],
        "etcHostsLine": etc_hosts["line"] if etc_hosts else None,
    }


def parse_report(stdout: str | None) -> dict[str, Any] | None:
    """The script's last stdout line is a JSON report of its run."""
    lines = [line for line in (stdout or "").splitlines() if line.strip()]
    if not lines:
        return None
    try:
        report = json.loads(lines[-1])
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def check_ssh_host(args: MirrorPlan) -> None:
    """An ssh host needs the key to log in with and the host key to verify (or the opt-out)."""
    host = args.host
    if not host.host_key and not host.insecure_ignore_host_key:
        raise ValueError(f"{host.label}: an ssh host needs its host key (or insecureIgnoreHostKey=true)")
    if args.ssh_private_key is None:
        raise ValueError(f"{host.label}: an ssh host needs a private key")


def ssh_connection(args: MirrorPlan) -> command.remote.ConnectionArgs:
    """How pulumi-command logs in to an ssh host, with the host key it must present.

    `host_key` ("<type> <base64>", checked by components/ssh_host_keys.py) is what
    pulumi-command verifies the server against: `ssh.ParseAuthorizedKey` then
    `ssh.FixedHostKey` (pulumi/pulumi-command provider/pkg/provider/remote/connection.go,
    `connectionBase.SSHConfig`). Left out only when the entry opts out explicitly with
    `insecureIgnoreHostKey=true`; the provider then accepts any key (`ssh.InsecureIgnoreHostKey`).
    """
    check_ssh_host(args)
    key = args.ssh_private_key
    assert key is not None
    host = args.host
    return command.remote.ConnectionArgs(
        host=host.host,
        port=host.port,
        user=host.user,
        private_key=pulumi.Output.secret(
            key.reveal() if isinstance(key, Secret) else key.apply(read_private_key)  # fails the deployment if bad
        ),
        host_key=host.host_key or None,
    )


def resource_suffix(host: MirrorHost) -> str:
    """Names a host's resources by the machine alone, so a user/port change replaces in place."""
    return re.sub(r"[^A-Za-z0-9.-]+", "-", host.identity)


# ---------------------------------------------------------------------------------------
# The args, checked: DaemonMirrorArgs -> MirrorPlan
# ---------------------------------------------------------------------------------------

_ARG_NAMES = frozenset(DaemonMirrorArgs.__annotations__)
_STACK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_DNS_NAME = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")


def _fail(field_name: str, value: Any, fix: str) -> ConfigError:
    return ConfigError(f"DaemonMirror {field_name}={value!r} is invalid: {fix}")


def _plain(args: Mapping[str, Any], field_name: str) -> Any:
    """A field that must be known before anything registers: the host entry decides which
    resources exist, the URLs and names are checked here."""
    value = args.get(field_name)
    items = value if isinstance(value, (list, tuple)) else [value]
    nested = [v for item in items if isinstance(item, Mapping) for v in item.values()]
    if any(isinstance(item, pulumi.Output) for item in (value, *items, *nested)):
        raise ConfigError(
            f"DaemonMirror {field_name} is an Output: DaemonMirror checks it before it creates anything, "
            "so it needs the plain value (only caCertPem and sshPrivateKey may be Outputs)"
        )
    return value


def _https_url(field_name: str, value: Any, schemes: tuple[str, ...] = ("https",)) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in schemes or not parts.hostname or parts.path not in ("", "/"):
        raise _fail(field_name, value, f"expected a URL {' or '.join(s + '://host[:port]' for s in schemes)}")
    return value.rstrip("/")


def _caches_of(value: Any) -> tuple[tuple[str, str, str], ...]:
    """(upstream URL, cache URL, cache host[:port]) per cache; the first is dockerd's mirror."""
    if not isinstance(value, (list, tuple)) or not value:
        raise _fail("caches", value, "expected a list of {upstreamUrl, cacheUrl}, the first dockerd's mirror")
    caches = []
    for index, cache in enumerate(value):
        if not isinstance(cache, Mapping) or set(cache) != {"upstreamUrl", "cacheUrl"}:
            raise _fail(f"caches[{index}]", cache, "expected {upstreamUrl, cacheUrl}")
        upstream = _https_url(f"caches[{index}].upstreamUrl", cache["upstreamUrl"], ("https", "http"))
        cache_url = _https_url(f"caches[{index}].cacheUrl", cache["cacheUrl"])
        # host[:port] as /etc/docker/certs.d names a registry's folder (naming.Names.address).
        caches.append((upstream, cache_url, urlsplit(cache_url).netloc))
    return tuple(caches)


def _hostnames_of(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and _DNS_NAME.match(v) for v in value):
        raise _fail("hostnames", value, "expected a list of DNS names such as docker-cache.dev.internal.network")
    return tuple(value)


def _stack_id_of(value: Any) -> str:
    if value is None:
        return naming.Names(pulumi.get_stack(), "", naming.HTTPS_DEFAULT_PORT).prefix
    if not isinstance(value, str) or not _STACK_ID.match(value):
        raise _fail("stackId", value, "expected letters, digits, '.', '_' and '-' (it names files on the host)")
    return value


def _host_address_of(value: Any) -> str:
    if value is None:
        return str(default("hostAddress"))
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _fail("hostAddress", value, "expected an IP address such as 10.0.0.5") from None


def _ca_cert_of(value: Any) -> pulumi.Input[str | None] | None:
    if isinstance(value, str) and value and "-----BEGIN CERTIFICATE-----" not in value:
        raise _fail("caCertPem", value[:40], "expected a PEM certificate (-----BEGIN CERTIFICATE-----)")
    if value is not None and not isinstance(value, (str, pulumi.Output)):
        raise _fail("caCertPem", value, "expected a PEM certificate")
    return value or None


def mirror_plan(args: Mapping[str, Any]) -> MirrorPlan:
    """Check DaemonMirrorArgs (stack config's errors for the host entry, the key and the path)
    and parse them into what the host gets. Raises ConfigError; creates nothing."""
    unknown = sorted(set(args) - _ARG_NAMES)
    if unknown:
        raise ConfigError(f"DaemonMirror: unknown argument {unknown[0]!r}: the arguments are {', '.join(_ARG_NAMES)}")
    host_address = _host_address_of(_plain(args, "hostAddress"))
    key = args.get("sshPrivateKey")
    # The host entry, the key and daemon.json's path are read as the mirrorHosts,
    # mirrorSshPrivateKey and daemonJsonPath keys are, with the same errors; a key passed as
    # an Output (a secret from another language) is checked when known (ssh_connection).
    mirror = read_mirror_settings(
        [_plain(args, "host")], PLACEHOLDER_KEY if isinstance(key, pulumi.Output) else key or "",
        _plain(args, "daemonJsonPath") or "", host_address,
    )
    (host,) = mirror.hosts
    (primary, *more) = _caches_of(_plain(args, "caches"))
    return MirrorPlan(
        host=host,
        stack_id=_stack_id_of(_plain(args, "stackId")),
        cache_url=primary[1],
        cache_address=primary[2],
        upstream_url=primary[0],
        more_caches=tuple(more),
        hostnames=_hostnames_of(_plain(args, "hostnames")),
        ca_cert_pem=_ca_cert_of(args.get("caCertPem")),
        ssh_private_key=key if isinstance(key, pulumi.Output) else mirror.ssh_private_key,
        paths=HostPaths(daemon_json=mirror.daemon_json_path),
        machine=this_machine() if host.is_local else None,
    )


# ---------------------------------------------------------------------------------------
# The component
# ---------------------------------------------------------------------------------------


class DaemonMirror(pulumi.ComponentResource):
    """Points one Docker host at a stack's caches, and takes it back on destroy.

    `opts.depends_on` is what the host must not be pointed at before: it goes to the command
    that changes the host (RegistryStack: the primary cache, the front and the passed verification).
    """

    host: str
    """The host: `local` or `user@host[:port]`."""
    configured: pulumi.Output[dict[str, Any]]
    """What the host is configured with: registryMirror, daemonJson, files, etcHostsLine."""
    report: pulumi.Output[dict[str, Any] | None]
    """The host script's report of its last run (what it found and changed)."""

    def __init__(self, name: str, args: DaemonMirrorArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        plan = mirror_plan(args)  # before anything registers
        if not plan.host.is_local:
            check_ssh_host(plan)
        # The component itself waits for nothing: only the command changes the host.
        own = copy.copy(opts) if opts is not None else pulumi.ResourceOptions()
        wait_for, own.depends_on = own.depends_on, None
        super().__init__("registry-stack:index:DaemonMirror", name, {}, own)
        script_args = pulumi.Output.from_input(plan.ca_cert_pem).apply(lambda pem: host_script_args(plan, pem))
        create = script_args.apply(lambda values: script_command("apply", values, plan.host.sudo))
        delete = script_args.apply(lambda values: script_command("remove", values, plan.host.sudo))
        # wait_for: created after the cache runs; destroyed (host restored) before it goes.
        options = pulumi.ResourceOptions(parent=self, delete_before_replace=True, depends_on=wait_for)
        common: dict[str, Any] = {
            "create": create,
            "delete": delete,
            "stdin": HOST_SCRIPT.read_text(),
            # Any change of what the host gets (or of how we log in) removes the old, then applies the new.
            "triggers": [create, plan.host.label],
        }
        if plan.host.is_local:
            self.command: pulumi.CustomResource = command.local.Command(f"{name}-apply", **common, opts=options)
        else:
            connection = ssh_connection(plan)
            if plan.host.insecure_ignore_host_key:
                pulumi.log.warn(
                    f"mirrorHosts entry {plan.host.entry!r} sets insecureIgnoreHostKey=true: its host key is not "
                    f"checked, so any machine answering at {plan.host.host}:{plan.host.port} receives the CA and "
                    "the daemon configuration. Replace the flag with ?hostKey=<its public host key>",
                    resource=self,
                )
            self.command = command.remote.Command(f"{name}-apply", connection=connection, **common, opts=options)

        self.host = plan.host.label
        self.configured = script_args.apply(configured_summary)
        self.report = self.command.stdout.apply(parse_report)  # type: ignore[attr-defined]
        self.register_outputs({"host": self.host, "configured": self.configured, "report": self.report})


# ---------------------------------------------------------------------------------------
# Wiring: one DaemonMirror per `mirrorHosts` entry
# ---------------------------------------------------------------------------------------


def daemon_mirrors_for(stack: "RegistryStack", settings: Settings, name: str = "registry") -> list[DaemonMirror]:
    """A DaemonMirror per configured host, children of the stack; none without a cache.

    `mirrorHosts` with the cache off is a warning, not an error: enableCache is a switch
    meant to be flipped, and the same `pulumi up` that removes the cache removes the
    DaemonMirrors, so the hosts stop pointing at it; switching it back on restores them.
    """
    mirror = settings.mirror
    if mirror is None or not mirror.hosts:
        return []
    if not settings.enable_cache:
        pulumi.log.warn(
            f"{PROJECT}:mirrorHosts lists {len(mirror.hosts)} host(s) but enableCache is false: there is no "
            "cache to point them at, so no DaemonMirror is created (hosts set up by an earlier run are "
            "restored). Set enableCache true, or remove mirrorHosts",
            resource=stack,
        )
        return []
    _warn_about_limits(stack, settings)
    # Only a stack that passed its verification is a mirror worth pointing hosts at.
    wait_for: list[pulumi.Input[pulumi.Resource]] = [
        *stack.primary_cache_resources, *([stack.verification.passed] if stack.verification else []),
    ]
    return [
        DaemonMirror(
            f"{name}-mirror-{resource_suffix(host)}",
            daemon_mirror_args(settings, host, None if settings.tls.is_acme else stack.ca_cert_pem),
            opts=pulumi.ResourceOptions(parent=stack, depends_on=wait_for),
        )
        for host in mirror.hosts
    ]


def daemon_mirror_args(
    settings: Settings, host: MirrorHost, ca_cert_pem: pulumi.Input[str | None] | None
) -> DaemonMirrorArgs:
    """The args RegistryStack gives the DaemonMirror of one `mirrorHosts` entry."""
    names = settings.names
    # dockerd mirrors Docker Hub only: its mirror is the primary cache (Docker Hub's when cached).
    primary = naming.primary(settings.caches)
    assert primary is not None, "enableCache is true, so there is a cache"
    caches: list[MirroredCacheArgs] = [
        {"upstreamUrl": u.url, "cacheUrl": names.url(names.cache_hostname(u.name))}
        for u in (primary, *(u for u in settings.caches if u != primary))
    ]
    args: DaemonMirrorArgs = {
        "host": host.entry,
        "caches": caches,
        "stackId": names.prefix,
        "hostnames": list(settings.hostnames),
        "hostAddress": settings.host_address,
        "daemonJsonPath": settings.mirror.daemon_json_path,
    }
    if ca_cert_pem is not None:
        args["caCertPem"] = ca_cert_pem  # type: ignore[typeddict-item]
    deferred_key = settings.deferred.get("mirrorSshPrivateKey")
    if not host.is_local and deferred_key is not None:
        args["sshPrivateKey"] = deferred_key
    elif not host.is_local and settings.mirror.ssh_private_key is not None:
        args["sshPrivateKey"] = settings.mirror.ssh_private_key.reveal()
    return args


def _warn_about_limits(stack: "RegistryStack", settings: Settings) -> None:
    if settings.tls.mode == TLS_LETSENCRYPT_STAGING:
        pulumi.log.warn(
            "tlsMode is letsencrypt-staging: Docker hosts do not trust staging certificates, so dockerd "
            "will skip the cache and pull from Docker Hub directly",
            resource=stack,
        )
    if settings.docker_hub_cache is None:
        pulumi.log.info(
            f"no upstream is named docker, so dockerd hosts get the first cache ({settings.upstream.url}) "
            "as their mirror, but dockerd's registry-mirrors serve Docker Hub names only (a stand-in for "
            "Docker Hub works); containerd hosts get a hosts.toml per cached registry",
            resource=stack,
        )
