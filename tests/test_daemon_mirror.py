"""DaemonMirror: config parsing (mirrorHosts & co), pure renderers, and the wiring under mocks."""

from __future__ import annotations

import base64
import json
import shlex
import tomllib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_ssh_public_key

from components.daemon_mirror import (
    HOST_SCRIPT,
    HostPaths,
    MirrorPlan,
    containerd_hosts_toml,
    containerd_registry_folder,
    etc_hosts_line,
    host_script_args,
    parse_report,
    script_command,
)
from components.mirror_settings import DEFAULT_DAEMON_JSON_PATH, MirrorHost, parse_mirror_host
from components.settings import ConfigError
from tests import harness
from tests.harness import Declaration, DeclaredResource, SecretValue, declare, unwrap

LOCAL_COMMAND = "command:local:Command"
REMOTE_COMMAND = "command:remote:Command"
COMPONENT = "registry-stack:index:DaemonMirror"
PASSWORD = "Ci-Pa55word-7f3a"


def openssh_key(cipher: bytes) -> str:
    """Not a usable key: only its shape matters (the cipher name), and whether it leaks."""
    blob = b"openssh-key-v1\0" + len(cipher).to_bytes(4, "big") + cipher + b"\0\0\0\4none-and-some-key-bytes"
    body = base64.b64encode(blob).decode()
    return f"-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----\n"


PRIVATE_KEY = openssh_key(b"none")
KEY_BODY = PRIVATE_KEY.splitlines()[1]


def public_host_key(seed: int, key_type: str = "ed25519") -> str:
    """A real public key ("ssh-ed25519 AAAA..."), the same on every run."""
    private: Any
    if key_type == "ed25519":
        private = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
    elif key_type == "ecdsa":
        private = ec.derive_private_key(seed + 1, ec.SECP256R1())
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return private.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


HOST_KEY = public_host_key(8)  # its base64 holds a "+"
OTHER_HOST_KEY = public_host_key(2)


def settings_for(values: dict[str, Any], secrets: tuple[str, ...] = ()) -> Any:
    return harness.settings({"users": [f"ci:{PASSWORD}"], **values}, {"users", *secrets})


def mirror_of(values: dict[str, Any], secrets: tuple[str, ...] = ()) -> Any:
    return settings_for(values, secrets).mirror


def config_error(values: dict[str, Any], secrets: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as raised:
        settings_for(values, secrets)
    return str(raised.value)


# ---------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------


def test_defaults_mean_no_hosts() -> None:
    mirror = mirror_of({})
    assert mirror.hosts == ()
    assert mirror.daemon_json_path == DEFAULT_DAEMON_JSON_PATH
    assert mirror.ssh_private_key is None


def test_host_entries_and_their_flags_are_parsed() -> None:
    mirror = mirror_of(
        {
            "mirrorHosts": [
                "local",
                f"ssh://root@node1.example:2222?containerd=true&etcHosts=10.0.0.5&hostKey={HOST_KEY}",
                f"ssh://ops@10.0.0.7?sudo=true&docker=false&containerd=true&hostKey={OTHER_HOST_KEY}",
                "ssh://root@[fd00::7]?insecureIgnoreHostKey=true",
            ],
            "mirrorSshPrivateKey": PRIVATE_KEY,
            "daemonJsonPath": "/etc/docker//daemon.json",
        },
        ("mirrorSshPrivateKey",),
    )
    local, node1, ops, v6 = mirror.hosts
    assert local.is_local and local.label == "local" and local.docker and not local.containerd
    assert (node1.user, node1.host, node1.port, node1.containerd, node1.etc_hosts_addresses) == (
        "root", "node1.example", 2222, True, ("10.0.0.5",)
    )
    assert node1.label == "root@node1.example:2222"
    assert (ops.sudo, ops.docker, ops.containerd, ops.port) == (True, False, True, 22)
    assert v6.host == "fd00::7" and v6.label == "root@[fd00::7]"
    assert mirror.daemon_json_path == "/etc/docker/daemon.json"
    assert mirror.ssh_private_key.reveal() == PRIVATE_KEY


def test_etc_hosts_true_uses_host_address() -> None:
    mirror = mirror_of({"mirrorHosts": ["local?etcHosts=true"], "hostAddress": "10.0.0.9"})
    assert mirror.hosts[0].etc_hosts_addresses == ("10.0.0.9",)


def test_etc_hosts_lists_several_addresses_the_preferred_first() -> None:
    """A swarm: this host's own node first, the other nodes after it, one hosts line each."""
    mirror = mirror_of({"mirrorHosts": ["local?etcHosts=10.0.0.6,10.0.0.5, 10.0.0.7"]})
    assert mirror.hosts[0].etc_hosts_addresses == ("10.0.0.6", "10.0.0.5", "10.0.0.7")
    assert etc_hosts_line(mirror.hosts[0].etc_hosts_addresses, ["a.example", "b.example"]) == (
        "10.0.0.6 a.example b.example\n10.0.0.5 a.example b.example\n10.0.0.7 a.example b.example"
    )


@pytest.mark.parametrize("value, says", [
    ("10.0.0.5,10.0.0.5", "names 10.0.0.5 twice"),
    ("10.0.0.5,node2", "several separated by commas"),
    ("10.0.0.5,", "several separated by commas"),
])
def test_a_bad_etc_hosts_list_names_the_entry_and_the_fix(value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as raised:
        mirror_of({"mirrorHosts": [f"local?etcHosts={value}"]})
    assert "mirrorHosts" in str(raised.value)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("node1", "the scheme is required"),
        ("http://root@node1", "scheme 'http' is not supported"),
        ("ssh://node1", "name the login user"),
        ("ssh://root:hunter2@node1", "drop the password"),
        ("ssh://root@node1/path", "no path"),
        ("ssh://root@node1:99999", "port must be a number"),
        ("ssh://root@bad_host!", "neither a DNS name nor an IP"),
        ("local?mirror=x", "unknown flag 'mirror'"),
        ("local?containerd=yes", "containerd='yes' must be true or false"),
        ("local?sudo=true&sudo=false", "given twice"),
        ("local?docker=false", "leaves nothing to configure"),
        ("local?etcHosts=nowhere", "must be true, false or an IP address"),
        ("local?", ""),
        ("", 'expected "local"'),
    ],
)
def test_bad_host_entries_name_key_value_and_fix(entry: str, expected: str) -> None:
    if entry == "local?":
        assert not parse_mirror_host(entry, 0, "127.0.0.1").containerd  # an empty query is harmless
        return
    message = config_error({"mirrorHosts": ["local", entry]})
    assert "registry-stack:mirrorHosts[1]" in message
    assert repr(entry) in message
    assert expected in message


def test_duplicate_hosts_are_refused_whatever_the_user_or_port() -> None:
    message = config_error(
        {
            "mirrorHosts": [f"ssh://root@Node1?hostKey={HOST_KEY}", f"ssh://ops@node1:2222?hostKey={HOST_KEY}"],
            "mirrorSshPrivateKey": PRIVATE_KEY,
        },
        ("mirrorSshPrivateKey",),
    )
    assert "mirrorHosts[1]" in message and "mirrorHosts[0]" in message and "same host" in message
    assert "local" in config_error({"mirrorHosts": ["local", "local?containerd=true"]})


def test_ssh_hosts_need_the_private_key() -> None:
    message = config_error({"mirrorHosts": [f"ssh://root@node1?hostKey={HOST_KEY}"]})
    assert "mirrorSshPrivateKey" in message and "pulumi config set --secret" in message


def test_private_key_must_be_a_secret_and_a_key() -> None:
    plain = config_error(
        {"mirrorHosts": [f"ssh://root@node1?hostKey={HOST_KEY}"], "mirrorSshPrivateKey": PRIVATE_KEY}
    )
    assert "plain text" in plain and KEY_BODY not in plain
    not_a_key = config_error({"mirrorSshPrivateKey": "~/.ssh/id_ed25519"}, ("mirrorSshPrivateKey",))
    assert "expected a PEM or OpenSSH private key" in not_a_key and "id_ed25519" not in not_a_key
    encrypted = openssh_key(b"aes256-ctr")
    assert "encrypted" in config_error({"mirrorSshPrivateKey": encrypted}, ("mirrorSshPrivateKey",))


def test_loopback_etc_hosts_on_a_remote_host_is_refused() -> None:
    message = config_error(
        {"mirrorHosts": [f"ssh://root@node1?etcHosts=true&hostKey={HOST_KEY}"], "mirrorSshPrivateKey": PRIVATE_KEY},
        ("mirrorSshPrivateKey",),
    )
    assert "loopback" in message and "hostAddress" in message


@pytest.mark.parametrize("path", ["daemon.json", "/etc/docker/", "/", "relative/daemon.json"])
def test_daemon_json_path_must_be_an_absolute_file_path(path: str) -> None:
    assert "registry-stack:daemonJsonPath" in config_error({"daemonJsonPath": path})


def test_mirror_hosts_is_not_a_secret_and_must_be_a_list() -> None:
    assert "not a secret" in config_error({"mirrorHosts": ["local"]}, ("mirrorHosts",))
    # Anything but a list stops at the CLI's type check, before the program runs.
    for not_a_list in ("local", '["local",'):
        with pytest.raises(harness.CliError, match="'mirrorHosts' must be of type 'array<string>'"):
            settings_for({"mirrorHosts": not_a_list})


# ---------------------------------------------------------------------------------------
# SSH host keys: every ssh host names the key it must present, or opts out explicitly
# ---------------------------------------------------------------------------------------


def ssh_host(query: str, index: int = 0) -> MirrorHost:
    return parse_mirror_host(f"ssh://root@node1.example?{query}", index, "127.0.0.1")


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa", "rsa"])
def test_host_key_reaches_the_provider_in_the_form_it_parses(key_type: str) -> None:
    key = public_host_key(7, key_type)
    host = ssh_host(f"hostKey={key} root@node1")
    assert host.host_key == key  # the comment dropped, '+' and '/' of the base64 kept
    # pulumi-command reads it with ssh.ParseAuthorizedKey: "<type> <base64>"; so does cryptography.
    parsed = load_ssh_public_key(host.host_key.encode())
    assert parsed.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode() == key


def test_host_key_may_be_the_base64_alone_a_keyscan_line_or_url_escaped() -> None:
    body = HOST_KEY.split()[1]
    # A query string's '+' means a space (parse_qsl): the key's own '+' must survive.
    assert "+" in body, "pick a seed whose key shows the escaping problem"
    assert ssh_host(f"hostKey={body}").host_key == HOST_KEY
    assert ssh_host(f"hostKey=node1.example,10.0.0.7 {HOST_KEY}").host_key == HOST_KEY
    escaped = HOST_KEY.replace("+", "%2B").replace("/", "%2F").replace(" ", "%20")
    assert ssh_host(f"containerd=true&hostKey={escaped}&sudo=true").host_key == HOST_KEY


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU", "this is a fingerprint"),
        ("ssh-dss AAAAB3NzaC1kc3M=", "cannot be verified by pulumi-command"),
        (HOST_KEY[:40], "not an SSH public key"),
        (HOST_KEY.replace("+", " ", 1), "not an SSH public key"),  # what parse_qsl would have made of it
        ("ssh-rsa " + HOST_KEY.split()[1], "its base64 body is a 'ssh-ed25519' key"),
        ("@cert-authority *.example " + HOST_KEY, "markers"),
        ("", "empty"),
    ],
)
def test_unusable_host_keys_name_the_entry_and_why(value: str, expected: str) -> None:
    entry = f"ssh://root@node1.example?hostKey={value}"
    message = config_error({"mirrorHosts": ["local", entry], "mirrorSshPrivateKey": PRIVATE_KEY},
                           ("mirrorSshPrivateKey",))
    assert "registry-stack:mirrorHosts[1]" in message and "hostKey" in message
    assert expected in message


def test_an_ssh_host_without_host_key_is_refused_with_the_way_to_get_it() -> None:
    entry = "ssh://deploy@node9.example:2200?sudo=true"
    message = config_error({"mirrorHosts": ["local", entry], "mirrorSshPrivateKey": PRIVATE_KEY},
                           ("mirrorSshPrivateKey",))
    assert f"registry-stack:mirrorHosts[1]={entry!r} has no host key" in message
    assert "ssh-keyscan -t ed25519 -p 2200 node9.example" in message
    assert "?hostKey=" in message and "?insecureIgnoreHostKey=true" in message


def test_host_key_choices_that_contradict_themselves_are_refused() -> None:
    both = config_error(
        {"mirrorHosts": [f"ssh://root@n1?hostKey={HOST_KEY}&insecureIgnoreHostKey=true"],
         "mirrorSshPrivateKey": PRIVATE_KEY}, ("mirrorSshPrivateKey",),
    )
    assert "both hostKey and insecureIgnoreHostKey" in both
    assert "for ssh:// hosts" in config_error({"mirrorHosts": [f"local?hostKey={HOST_KEY}"]})
    assert "for ssh:// hosts" in config_error({"mirrorHosts": ["local?insecureIgnoreHostKey=true"]})
    assert "must be true or false" in config_error({"mirrorHosts": ["ssh://root@n1?insecureIgnoreHostKey=yes"]})
    # insecureIgnoreHostKey=false is no opt-out: the host still needs its key.
    assert "has no host key" in config_error({"mirrorHosts": ["ssh://root@n1?insecureIgnoreHostKey=false"]})


SSH_HOSTS = [
    f"ssh://root@node1.example:2222?hostKey={HOST_KEY}",
    f"ssh://ops@node2.example?sudo=true&hostKey={OTHER_HOST_KEY.split()[1]}",
    "ssh://root@node3.example?insecureIgnoreHostKey=true",
]


def test_every_ssh_command_carries_the_host_key_of_its_entry() -> None:
    declaration = declared({"mirrorHosts": ["local", *SSH_HOSTS]})
    by_host = {unwrap(r.inputs["connection"])["host"]: r for r in declaration.of_type(REMOTE_COMMAND)}
    assert set(by_host) == {"node1.example", "node2.example", "node3.example"}
    assert unwrap(by_host["node1.example"].inputs["connection"])["hostKey"] == HOST_KEY
    assert unwrap(by_host["node2.example"].inputs["connection"])["hostKey"] == OTHER_HOST_KEY
    # The opt-out is the only remote command without one, and it is said out loud.
    assert "hostKey" not in unwrap(by_host["node3.example"].inputs["connection"])
    warnings = [line for line in declaration.logs if line.startswith("warn:") and "insecureIgnoreHostKey" in line]
    assert len(warnings) == 1 and "node3.example" in warnings[0] and "node1" not in warnings[0]
    assert "connection" not in declaration.of_type(LOCAL_COMMAND)[0].inputs


def test_the_component_refuses_an_ssh_host_it_cannot_verify() -> None:
    from components.daemon_mirror import check_ssh_host

    unverified = MirrorHost(entry="ssh://root@n1", user="root", host="n1")
    with pytest.raises(ValueError, match="needs its host key"):
        check_ssh_host(mirror_args(unverified))


# ---------------------------------------------------------------------------------------
# Pure renderers
# ---------------------------------------------------------------------------------------


def test_hosts_toml_follows_containerds_format() -> None:
    text = containerd_hosts_toml(
        "https://registry-1.docker.io", "https://docker-cache.dev.internal.network:8443", "/etc/containerd/ca.crt"
    )
    assert tomllib.loads(text) == {
        "server": "https://registry-1.docker.io",
        "host": {
            "https://docker-cache.dev.internal.network:8443": {
                "capabilities": ["pull", "resolve"],
                "ca": "/etc/containerd/ca.crt",
            }
        },
    }
    assert "ca =" not in containerd_hosts_toml("https://registry-1.docker.io", "https://c.example", None)


def test_hosts_toml_folder_is_docker_io_for_docker_hub_only() -> None:
    assert containerd_registry_folder("https://registry-1.docker.io") == "docker.io"
    assert containerd_registry_folder("https://ghcr.io") == "ghcr.io"
    assert containerd_registry_folder("http://upstream:5000") == "upstream:5000"


def mirror_args(host: MirrorHost, **overrides: Any) -> MirrorPlan:
    values: dict[str, Any] = {
        "host": host,
        "stack_id": "registry-stack-dev",
        "cache_url": "https://docker-cache.dev.internal.network",
        "cache_address": "docker-cache.dev.internal.network",
        "upstream_url": "https://registry-1.docker.io",
        "hostnames": ("docker-build.dev.internal.network", "docker-cache.dev.internal.network"),
        **overrides,
    }
    return MirrorPlan(**values)


def test_script_args_list_what_the_host_gets() -> None:
    host = parse_mirror_host("local?containerd=true&etcHosts=true", 0, "10.0.0.5")
    args = host_script_args(mirror_args(host, paths=HostPaths(containerd_certs_d="/c")), "PEM")
    assert args["daemon_json"] == {"path": "/etc/docker/daemon.json", "mirror": "https://docker-cache.dev.internal.network"}
    assert [f["path"] for f in args["files"]] == [
        "/etc/docker/certs.d/docker-cache.dev.internal.network/ca.crt",
        "/c/docker-cache.dev.internal.network/ca.crt",
        "/c/docker.io/hosts.toml",
    ]
    assert args["etc_hosts"]["line"] == "10.0.0.5 docker-build.dev.internal.network docker-cache.dev.internal.network"
    # Without a CA (ACME modes) nothing is installed and hosts.toml names no CA.
    bare = host_script_args(mirror_args(parse_mirror_host("local", 0, "127.0.0.1")), None)
    assert bare["files"] == [] and bare["etc_hosts"] is None


def test_script_command_quotes_its_args_for_the_shell() -> None:
    args = {"id": "x", "line": "it's; $(rm -rf /)"}
    words = shlex.split(script_command("apply", args, sudo=True))
    assert words[:4] == ["sudo", "-n", "python3", "-"]
    assert words[4] == "apply" and json.loads(words[5]) == args


def test_parse_report_reads_the_last_stdout_line() -> None:
    assert parse_report('noise\n{"action": "apply", "changed": []}\n') == {"action": "apply", "changed": []}
    assert parse_report(None) is None and parse_report("not json") is None


# ---------------------------------------------------------------------------------------
# The program under mocks
# ---------------------------------------------------------------------------------------

HOSTS = [
    "local?etcHosts=true",
    f"ssh://root@node1.example:2222?containerd=true&etcHosts=10.0.0.5&hostKey={HOST_KEY}",
]


def declared(values: dict[str, Any] | None = None, **extra: Any) -> Declaration:
    config = {"users": [f"ci:{PASSWORD}"], "mirrorHosts": HOSTS, "mirrorSshPrivateKey": PRIVATE_KEY}
    config.update(values or {})
    return declare(config, secret_keys=("users", "mirrorSshPrivateKey"), **extra)


def commands(declaration: Declaration) -> list[DeclaredResource]:
    return declaration.of_type(LOCAL_COMMAND) + declaration.of_type(REMOTE_COMMAND)


def test_one_command_per_host_local_and_remote() -> None:
    declaration = declared()
    names = [r.name for r in declaration.of_type(COMPONENT)]
    assert names == ["registry-mirror-local", "registry-mirror-node1.example"]
    (local,) = declaration.of_type(LOCAL_COMMAND)
    (remote,) = declaration.of_type(REMOTE_COMMAND)
    assert local.name == "registry-mirror-local-apply"
    assert remote.name == "registry-mirror-node1.example-apply"
    assert "connection" not in local.inputs
    connection = unwrap(remote.inputs["connection"])
    assert (connection["host"], connection["port"], connection["user"]) == ("node1.example", 2222, "root")


def test_commands_run_the_host_script_apply_and_remove() -> None:
    for resource in commands(declared()):
        inputs = resource.plain_inputs
        assert inputs["stdin"] == HOST_SCRIPT.read_text()
        create, delete = shlex.split(inputs["create"]), shlex.split(inputs["delete"])
        assert create[:3] == ["python3", "-", "apply"] and delete[:3] == ["python3", "-", "remove"]
        assert json.loads(create[3]) == json.loads(delete[3]), "remove gets what apply got"
        args = json.loads(create[3])
        assert args["id"] == "registry-stack-dev"
        assert args["daemon_json"]["mirror"] == "https://docker-cache.dev.internal.network"
        ca_file = next(f for f in args["files"] if f["path"].startswith("/etc/docker/certs.d/"))
        assert ca_file["content"].startswith("-----BEGIN CERTIFICATE-----")


def test_replacement_deletes_first_and_everything_the_host_gets_triggers_it() -> None:
    for resource in commands(declared()):
        assert resource.options["deleteBeforeReplace"] is True
        triggers = resource.plain_inputs["triggers"]
        assert resource.plain_inputs["create"] in triggers
    remote = declared().of_type(REMOTE_COMMAND)[0]
    assert "root@node1.example:2222" in remote.plain_inputs["triggers"]


def test_a_changed_ca_or_cache_url_changes_the_triggers() -> None:
    first = declared().of_type(LOCAL_COMMAND)[0].plain_inputs["triggers"]
    moved = declared({"httpsPort": 8443}).of_type(LOCAL_COMMAND)[0].plain_inputs["triggers"]
    assert first != moved
    assert "https://docker-cache.dev.internal.network:8443" in moved[0]


def test_private_key_only_inside_secret_values() -> None:
    declaration = declared()
    (remote,) = declaration.of_type(REMOTE_COMMAND)
    assert KEY_BODY in json.dumps(unwrap(remote.inputs["connection"]))

    def plain_text(value: Any) -> list[str]:
        if isinstance(value, SecretValue):
            return []
        if isinstance(value, dict):
            return [text for item in value.values() for text in plain_text(item)]
        if isinstance(value, list):
            return [text for item in value for text in plain_text(item)]
        return [str(value)]

    for resource in declaration.resources:
        assert not [t for t in plain_text(resource.inputs) if KEY_BODY in t], resource.name
    assert KEY_BODY not in json.dumps(unwrap(declaration.outputs), default=str)
    assert not [line for line in declaration.logs if KEY_BODY in line]


def test_commands_wait_for_the_cache_and_the_front() -> None:
    declaration = declared()
    for resource in commands(declaration):
        waits_for = {urn.rpartition("::")[2] for urn in resource.options["dependencies"]}
        assert {"registry-cache", "registry-front"} <= waits_for
        assert resource.parent.endswith(f"registry-stack:index:DaemonMirror::{resource.name.removesuffix('-apply')}")


def test_nothing_when_the_cache_is_off_and_a_warning_says_why() -> None:
    declaration = declared({"enableCache": False})
    assert not declaration.of_type(COMPONENT) and not commands(declaration)
    assert declaration.outputs["daemonMirrors"] == {}
    assert any(line.startswith("warn:") and "enableCache is false" in line for line in declaration.logs)


def test_nothing_without_mirror_hosts() -> None:
    declaration = declare({"users": [f"ci:{PASSWORD}"]}, secret_keys=("users",))
    assert not declaration.of_type(COMPONENT)
    assert declaration.outputs["daemonMirrors"] == {}


def test_acme_modes_install_no_ca() -> None:
    declaration = declared({"tlsMode": "letsencrypt", "acmeEmail": "ops@example.org", "mirrorHosts": ["local"]})
    args = json.loads(shlex.split(declaration.of_type(LOCAL_COMMAND)[0].plain_inputs["create"])[3])
    assert args["files"] == []
    assert args["daemon_json"]["mirror"] == "https://docker-cache.dev.internal.network"


def test_staging_mode_warns_that_hosts_will_not_trust_the_cache() -> None:
    declaration = declared(
        {"tlsMode": "letsencrypt-staging", "acmeEmail": "ops@example.org", "mirrorHosts": ["local"]}
    )
    assert any("letsencrypt-staging" in line and line.startswith("warn:") for line in declaration.logs)


def test_sudo_and_daemon_json_path_reach_the_command() -> None:
    declaration = declared(
        {"mirrorHosts": [f"ssh://ops@node2?sudo=true&hostKey={HOST_KEY}"], "daemonJsonPath": "/etc/dockerd.json"}
    )
    words = shlex.split(declaration.of_type(REMOTE_COMMAND)[0].plain_inputs["create"])
    assert words[:3] == ["sudo", "-n", "python3"]
    assert json.loads(words[5])["daemon_json"]["path"] == "/etc/dockerd.json"


def test_outputs_per_host_say_what_was_configured() -> None:
    outputs = unwrap(declared().outputs["daemonMirrors"])
    assert set(outputs) == {"local", "root@node1.example:2222"}
    remote = outputs["root@node1.example:2222"]["configured"]
    assert remote["registryMirror"] == "https://docker-cache.dev.internal.network"
    assert remote["daemonJson"] == "/etc/docker/daemon.json"
    assert "/etc/containerd/certs.d/docker.io/hosts.toml" in remote["files"]
    assert remote["etcHostsLine"].startswith("10.0.0.5 ")
    assert outputs["local"]["configured"]["etcHostsLine"].startswith("127.0.0.1 ")


def test_same_config_declares_the_same_commands() -> None:
    def snapshot() -> list[Any]:
        return [(r.name, r.plain_inputs) for r in commands(declared())]

    assert json.dumps(snapshot(), sort_keys=True, default=str) == json.dumps(snapshot(), sort_keys=True, default=str)


def test_only_the_local_command_names_the_machine_it_must_run_on() -> None:
    from components.host_scripts.daemon_mirror_host import this_machine

    for resource in commands(declared()):
        create, delete = (json.loads(shlex.split(resource.plain_inputs[k])[3]) for k in ("create", "delete"))
        if resource.type == LOCAL_COMMAND:
            # The delete stored in state carries it too: a destroy from elsewhere is refused there.
            assert create["machine"] == delete["machine"] == this_machine()
        else:
            assert create["machine"] is None and delete["machine"] is None
