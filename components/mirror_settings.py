"""Config of the DaemonMirror: which Docker hosts are pointed at the cache, and how.

Three keys (Pulumi project config has no object type, so per-host options ride on the host
entry as URL query flags):

- `mirrorHosts` (array of strings): `local` for the machine running `pulumi up`, or
  `ssh://user@host[:port]`; either may carry flags, e.g.
  `ssh://root@node1?containerd=true&etcHosts=10.0.0.5`. Every ssh host names the public
  host key it must present (`?hostKey=ssh-ed25519 AAAA...`, see ssh_host_keys.py) or opts
  out explicitly (`?insecureIgnoreHostKey=true`).
- `mirrorSshPrivateKey` (secret string): the key for every ssh:// host.
- `daemonJsonPath` (string): where dockerd reads its config on the hosts.

`read_mirror_settings` is a pure function of the three keys' typed values (config_schema.py
has their types and defaults; `settings.settings_from_values` calls it), so every error is
tested without mocks.
"""

from __future__ import annotations

import base64
import ipaddress
import posixpath
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .config_schema import PROJECT, ConfigError, default
from .secret import Secret
from .ssh_host_keys import HostKeyError, normalize_host_key

DEFAULT_DAEMON_JSON_PATH: str = default("daemonJsonPath")
LOCAL = "local"
DEFAULT_SSH_PORT = 22

# name -> (what it does, allowed values) for the error messages
HOST_FLAGS = {
    "docker": "set the cache as dockerd's registry mirror in daemon.json (default true)",
    "containerd": "write containerd's certs.d hosts.toml for the cached upstream (default false)",
    "podman": "write a registries.conf.d drop-in for podman, CRI-O, buildah and skopeo (default false)",
    "etcHosts": "add the registry names to /etc/hosts: true (hostAddress), an IP address, or several separated by "
                "commas, the preferred first (default false)",
    "sudo": "run the host script with `sudo -n` when the user is not root (default false)",
    "hostKey": "ssh hosts: the public host key the host must present, e.g. hostKey=ssh-ed25519 AAAA... (required)",
    "insecureIgnoreHostKey": "ssh hosts: true accepts any host key instead of hostKey (not recommended)",
}

_HOST_NAME = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")
_SSH_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,31}$")
_TRUE_FALSE = {"true": True, "false": False}


@dataclass(frozen=True)
class MirrorHost:
    """One Docker host to point at the cache, parsed from a `mirrorHosts` entry."""

    entry: str
    user: str = ""
    host: str = ""
    port: int = DEFAULT_SSH_PORT
    docker: bool = True
    containerd: bool = False
    podman: bool = False
    # () = leave /etc/hosts alone; otherwise the addresses the registry names map to, the
    # preferred first (a swarm: this host's own node, then the others). Go's resolver, which
    # dockerd, containerd and podman use, returns every address of a name in /etc/hosts, and
    # a dial tries them in turn, so a refused first address falls through to the next.
    etc_hosts_addresses: tuple[str, ...] = ()
    sudo: bool = False
    # ssh hosts: `<type> <base64>` the host must present (pulumi-command's connection.hostKey),
    # or the explicit opt-out; exactly one of them is set on every ssh host.
    host_key: str = ""
    insecure_ignore_host_key: bool = False

    @property
    def is_local(self) -> bool:
        return not self.host

    @property
    def identity(self) -> str:
        """What makes two entries the same machine: `local`, or the host name (any user/port)."""
        return LOCAL if self.is_local else self.host.lower()

    @property
    def label(self) -> str:
        """`local` or `user@host[:port]`: stable, readable, used in resource names and outputs."""
        if self.is_local:
            return LOCAL
        port = "" if self.port == DEFAULT_SSH_PORT else f":{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}{port}"


@dataclass(frozen=True)
class MirrorSettings:
    hosts: tuple[MirrorHost, ...]
    ssh_private_key: Secret | None
    daemon_json_path: str

    @property
    def any_ssh_host(self) -> bool:
        return any(not host.is_local for host in self.hosts)


def read_mirror_settings(
    hosts: list[str], ssh_private_key: str, daemon_json_path: str, host_address: str
) -> MirrorSettings:
    """Validate `mirrorHosts`, `mirrorSshPrivateKey` and `daemonJsonPath`.

    `host_address` (the validated `hostAddress`) is what `etcHosts=true` maps the names to.
    """
    parsed = _read_hosts(hosts, host_address)
    key = _read_private_key(ssh_private_key)
    ssh_hosts = [host for host in parsed if not host.is_local]
    if ssh_hosts and key is None:
        raise ConfigError(
            f"{PROJECT}:mirrorHosts has ssh host {ssh_hosts[0].entry!r} but {PROJECT}:mirrorSshPrivateKey "
            "is not set: store the private key the hosts accept with "
            f"`pulumi config set --secret {PROJECT}:mirrorSshPrivateKey < ~/.ssh/id_ed25519`"
        )
    return MirrorSettings(
        hosts=parsed,
        ssh_private_key=key,
        daemon_json_path=_read_daemon_json_path(daemon_json_path),
    )


# ---------------------------------------------------------------------------------------
# mirrorHosts
# ---------------------------------------------------------------------------------------


def _read_hosts(entries: list[str], host_address: str) -> tuple[MirrorHost, ...]:
    hosts = [parse_mirror_host(entry, index, host_address) for index, entry in enumerate(entries)]
    _reject_duplicates(hosts)
    return tuple(hosts)


def parse_mirror_host(entry: Any, index: int, host_address: str) -> MirrorHost:
    """One `mirrorHosts` entry: `local[?flags]` or `ssh://user@host[:port][?flags]`."""
    key = f"{PROJECT}:mirrorHosts[{index}]"
    if not isinstance(entry, str) or not entry.strip():
        raise ConfigError(f"{key}={entry!r} is invalid: expected \"local\" or \"ssh://user@host[:port]\"")
    text = entry.strip()
    target, _, query = text.partition("?")
    if target == LOCAL:
        flags = _parse_flags(key, text, query, host_address, remote=False)
        return MirrorHost(entry=text, **flags)
    user, host, port = _parse_ssh_target(key, text, target)
    flags = _parse_flags(key, text, query, host_address, remote=True)
    _require_host_key_choice(key, text, host, port, flags)
    return MirrorHost(entry=text, user=user, host=host, port=port, **flags)


def _parse_ssh_target(key: str, text: str, target: str) -> tuple[str, str, int]:
    def fail(fix: str) -> ConfigError:
        return ConfigError(f"{key}={text!r} is invalid: {fix}")

    if "://" not in target:
        raise fail('expected "local" or a URL "ssh://user@host[:port]" (the scheme is required)')
    parts = urlsplit(target)
    if parts.scheme != "ssh":
        raise fail(f'scheme {parts.scheme!r} is not supported: use "ssh://user@host[:port]" or "local"')
    if parts.password is not None:
        raise fail("drop the password from the URL: hosts log in with mirrorSshPrivateKey (a secret)")
    if parts.path not in ("", "/") or parts.fragment:
        raise fail('a host entry has no path or fragment: "ssh://user@host[:port]"')
    if not parts.username:
        raise fail('name the login user: "ssh://root@host" (or a sudoer with ?sudo=true)')
    if not _SSH_USER.match(parts.username):
        raise fail(f"user {parts.username!r} is not a valid login name")
    host = parts.hostname or ""
    if not _valid_host(host):
        raise fail(f"host {host!r} is neither a DNS name nor an IP address")
    try:
        port = parts.port or DEFAULT_SSH_PORT
    except ValueError:
        raise fail("the port must be a number from 1 to 65535") from None
    return parts.username, host, port


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOST_NAME.match(host))


def _parse_flags(key: str, text: str, query: str, host_address: str, remote: bool) -> dict[str, Any]:
    def fail(fix: str) -> ConfigError:
        return ConfigError(f"{key}={text!r} is invalid: {fix}")

    seen: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name not in HOST_FLAGS:
            known = "; ".join(f"{flag}: {meaning}" for flag, meaning in HOST_FLAGS.items())
            raise fail(f"unknown flag {name!r}. The flags are {known}")
        if name in seen:
            raise fail(f"flag {name!r} is given twice: keep one")
        seen[name] = value.strip()
    if query and not seen:
        raise fail("the text after '?' holds no flag: write flags as ?name=value&name=value")

    flags: dict[str, Any] = {}
    for name in ("docker", "containerd", "podman", "sudo", "insecureIgnoreHostKey"):
        if name in seen:
            if seen[name].lower() not in _TRUE_FALSE:
                raise fail(f"flag {name}={seen[name]!r} must be true or false")
            flags[name] = _TRUE_FALSE[seen[name].lower()]
    if "insecureIgnoreHostKey" in flags:
        flags["insecure_ignore_host_key"] = flags.pop("insecureIgnoreHostKey")
    if "hostKey" in seen:
        flags["host_key"] = _host_key_flag(query, fail)
    if not remote and ("host_key" in flags or "insecure_ignore_host_key" in flags):
        raise fail("hostKey and insecureIgnoreHostKey are for ssh:// hosts: `local` runs without SSH")
    if not flags.get("docker", True) and not flags.get("containerd", False) and not flags.get("podman", False):
        raise fail("docker=false leaves nothing to configure: add containerd=true or podman=true, or drop the entry")
    if "etcHosts" in seen:
        flags["etc_hosts_addresses"] = _etc_hosts_addresses(seen["etcHosts"], host_address, remote, fail)
    return flags


def _etc_hosts_addresses(value: str, host_address: str, remote: bool, fail: Any) -> tuple[str, ...]:
    lowered = value.lower()
    if lowered == "false":
        return ()
    if lowered == "true":
        if remote and ipaddress.ip_address(host_address).is_loopback:
            # On a remote host the loopback address is that host itself, not the registry.
            raise fail(
                f"etcHosts=true maps the registry names to hostAddress={host_address!r}, a loopback "
                f"address, which on a remote host is that host itself: set {PROJECT}:hostAddress to the "
                "registry host's address, or give it per host (etcHosts=10.0.0.5)"
            )
        return (host_address,)
    addresses = []
    for part in value.split(","):
        try:
            address = str(ipaddress.ip_address(part.strip()))
        except ValueError:
            raise fail(
                f"etcHosts={value!r} must be true, false or an IP address such as 10.0.0.5, or several separated "
                "by commas (10.0.0.5,10.0.0.6: this host's own swarm node first)"
            ) from None
        if address in addresses:
            raise fail(f"etcHosts={value!r} names {address} twice: list each address once")
        addresses.append(address)
    return tuple(addresses)


def _host_key_flag(query: str, fail: Any) -> str:
    """The hostKey value as written: only %-escapes decoded, since parse_qsl would turn the
    '+' of the key's base64 into spaces."""
    raw = next(part.partition("=")[2] for part in query.split("&") if part.partition("=")[0] == "hostKey")
    try:
        return normalize_host_key(unquote(raw))
    except HostKeyError as error:
        raise fail(f"hostKey: {error}") from None


def _require_host_key_choice(key: str, text: str, host: str, port: int, flags: dict[str, Any]) -> None:
    """Every ssh host names the key it must present, or opts out of the check explicitly."""
    if flags.get("host_key") and flags.get("insecure_ignore_host_key"):
        raise ConfigError(
            f"{key}={text!r} is invalid: it sets both hostKey and insecureIgnoreHostKey=true; keep hostKey"
        )
    if flags.get("host_key") or flags.get("insecure_ignore_host_key"):
        return
    port_option = "" if port == DEFAULT_SSH_PORT else f"-p {port} "
    raise ConfigError(
        f"{key}={text!r} has no host key: without one, pulumi-command accepts whatever machine answers at "
        f"{host}:{port} and sends it the CA and the daemon configuration. Add the public host key the host "
        f"must present, as ?hostKey=ssh-ed25519 AAAA... (`ssh-keyscan -t ed25519 {port_option}{host}` prints "
        "it; compare its fingerprint, `ssh-keygen -lf`, with the host's own "
        "/etc/ssh/ssh_host_ed25519_key.pub), or opt out for this host with ?insecureIgnoreHostKey=true"
    )


def _reject_duplicates(hosts: list[MirrorHost]) -> None:
    first_index: dict[str, int] = {}
    for index, host in enumerate(hosts):
        if host.identity in first_index:
            other = first_index[host.identity]
            raise ConfigError(
                f"{PROJECT}:mirrorHosts[{index}]={host.entry!r} names the same host as "
                f"mirrorHosts[{other}]={hosts[other].entry!r}: one entry per host (two entries would "
                "edit the same daemon.json and undo each other); remove one"
            )
        first_index[host.identity] = index


# ---------------------------------------------------------------------------------------
# mirrorSshPrivateKey, daemonJsonPath
# ---------------------------------------------------------------------------------------


# Stands for a key passed as an Output (known at apply time, checked then with read_private_key).
PLACEHOLDER_KEY = "-----BEGIN PRIVATE KEY-----\n(known at apply time)\n-----END PRIVATE KEY-----\n"


def read_private_key(value: str) -> str:
    """A key known only at apply time, checked as `mirrorSshPrivateKey` is (raises ConfigError)."""
    key = _read_private_key(value)
    if key is None:
        raise ConfigError(f"{PROJECT}:mirrorSshPrivateKey is empty: an ssh host needs the private key it accepts")
    return key.reveal()


def _read_private_key(value: str) -> Secret | None:
    if value == "":
        return None
    if "-----BEGIN" not in value or "PRIVATE KEY-----" not in value:
        raise ConfigError(
            f"{PROJECT}:mirrorSshPrivateKey=**** is invalid: expected a PEM or OpenSSH private key "
            "(-----BEGIN ... PRIVATE KEY-----), not a path or a public key"
        )
    if _is_encrypted_key(value):
        raise ConfigError(
            f"{PROJECT}:mirrorSshPrivateKey=**** is encrypted: store a key without a passphrase "
            "(the secret store already encrypts it)"
        )
    # Keys pasted without their final newline are refused by some SSH libraries.
    return Secret(value if value.endswith("\n") else value + "\n")


def _is_encrypted_key(pem: str) -> bool:
    """PEM keys say so in their armor; OpenSSH keys name their cipher inside the base64 body."""
    if "ENCRYPTED" in pem:
        return True
    if "BEGIN OPENSSH PRIVATE KEY" not in pem:
        return False
    body = "".join(line.strip() for line in pem.splitlines() if line.strip() and not line.startswith("-----"))
    try:
        blob = base64.b64decode(body)
    except ValueError:
        return False
    # "openssh-key-v1\0", then the cipher name as a length-prefixed string ("none" = plain).
    magic = b"openssh-key-v1\x00"
    if not blob.startswith(magic):
        return False
    length = int.from_bytes(blob[len(magic) : len(magic) + 4], "big")
    cipher = blob[len(magic) + 4 : len(magic) + 4 + length]
    return cipher != b"none"


def _read_daemon_json_path(value: str) -> str:
    if value == "":
        return DEFAULT_DAEMON_JSON_PATH
    text = value.strip()
    normalized = posixpath.normpath(text)
    if not text.startswith("/") or text.endswith("/") or "\n" in text or normalized in ("/", "//"):
        raise ConfigError(
            f"{PROJECT}:daemonJsonPath={value!r} is invalid: expected the absolute path of dockerd's "
            f"config file on the hosts, such as {DEFAULT_DAEMON_JSON_PATH}"
        )
    return normalized
