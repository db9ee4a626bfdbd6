"""containerd 2 and podman 5 hosts, pointed at the caches by DaemonMirror over SSH, each with
its native configuration, and proven by a pull under the upstream's real name with the
upstream unreachable:

- containerd (`?docker=false&containerd=true`): /etc/containerd/certs.d/<registry>/hosts.toml
  per cached upstream, read on every pull (no restart) by `ctr images pull --hosts-dir`;
  containerd's CRI plugin reads them only once config.toml's `config_path` points there
  (Debian's containerd 2.1 has ''), which DaemonMirror sets and containerd reads at start;
- podman (`?docker=false&podman=true`): a drop-in in /etc/containers/registries.conf.d/
  with `[[registry]]` + `[[registry.mirror]]` per upstream and the CA in
  /etc/containers/certs.d/<cache>/, read on every podman command.
"""

from __future__ import annotations

import json
import time

from testbed.hosts_file import HOSTS_CACHE_SECONDS
from tests.e2e.host_stack import HostStack, manifest_requested, seed, unique_repository
from tests.e2e.hosts import Host


def report_of(result) -> dict:
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def seeded_pair(stack: HostStack, prefix: str) -> tuple[str, str]:
    """(Docker Hub repository, ghcr.io repository), each only in its stand-in upstream."""
    hub, ghcr = f"library/{unique_repository(prefix)}", f"org/{unique_repository(prefix)}"
    seed(stack.hub, hub)
    seed(stack.ghcr, ghcr)
    return hub, ghcr


def both_upstreams(hub: str, ghcr: str) -> list[tuple[str, str, str]]:
    """(the upstream's real name to pull, the cache role that must log it, the repository)."""
    return [(f"docker.io/{hub}:1", "cache", hub), (f"ghcr.io/{ghcr}:1", "ghcr-cache", ghcr)]


def apply_twice(stack: HostStack, name: str) -> dict:
    applied = report_of(stack.run(name, "apply"))
    again = report_of(stack.run(name, "apply"))
    assert again["changed"] == [], again
    time.sleep(HOSTS_CACHE_SECONDS)  # resolvers re-read /etc/hosts (the etcHosts line) within 5 s
    return applied


def listing(host: Host, *folders: str) -> str:
    return host.sh(f"ls -A {' '.join(folders)} 2>/dev/null; true").stdout.strip()


def test_containerd_pulls_every_upstream_through_its_cache_by_hosts_toml(hosts_stack: HostStack) -> None:
    stack, host = hosts_stack, hosts_stack.host("containerd2")
    hub, ghcr = seeded_pair(stack, "ctr")
    config = "/etc/containerd/config.toml"
    original_config = host.read(config)
    containerd = host.pid_of("containerd")

    def ctr_pull(reference: str):
        return host.sh(f"ctr images pull --hosts-dir /etc/containerd/certs.d {reference}", check=False)

    assert ctr_pull(f"docker.io/{hub}:1").returncode != 0, "nothing serves it before"
    applied = apply_twice(stack, "containerd2")
    assert applied["configured"]["registry_mirror"] is None, "docker=false: no daemon.json"
    assert host.read("/etc/docker/daemon.json") is None
    toml = host.read("/etc/containerd/certs.d/ghcr.io/hosts.toml").decode()
    assert f'[host."https://{stack.cache_address("ghcr")}"]' in toml

    # hosts.toml is read on every pull: ctr --hosts-dir uses the files at once, no restart.
    for reference, role, repository in both_upstreams(hub, ghcr):
        pulled = ctr_pull(reference)
        assert pulled.returncode == 0, f"{reference}: {pulled.stdout}{pulled.stderr}"
        assert manifest_requested(stack.cache_log(role), repository)
    assert host.pid_of("containerd") == containerd

    # containerd's CRI plugin (kubelet, crictl) reads them only with config_path, which
    # Debian's containerd 2.1 leaves '': DaemonMirror sets it; containerd reads it at start.
    # No CRI client is packaged here to pull with: the effective config is what is checked.
    dump = host.sh("containerd config dump").stdout
    registry = dump.split("[plugins.'io.containerd.cri.v1.images'.registry]", 1)[1].split("[", 1)[0]
    assert "config_path = '/etc/containerd/certs.d'" in registry, registry
    assert "restart it to read config_path" in applied["containerd"]

    report_of(stack.run("containerd2", "remove"))
    assert host.read(config) == original_config
    assert listing(host, "/etc/containerd/certs.d", "/var/lib/registry-stack") == ""
    assert host.pid_of("containerd") == containerd, "hosts.toml needs no restart, nor does its removal"
    other = f"library/{unique_repository('ctr-after')}"
    seed(stack.hub, other)
    assert ctr_pull(f"docker.io/{other}:1").returncode != 0, "without the files the cache is out of reach again"


def test_podman_pulls_every_upstream_through_its_cache_by_a_registries_conf_drop_in(hosts_stack: HostStack) -> None:
    stack, host = hosts_stack, hosts_stack.host("podman5")
    hub, ghcr = seeded_pair(stack, "podman")
    registries_d = "/etc/containers/registries.conf.d"
    before = listing(host, registries_d)

    def podman_pull(reference: str):
        return host.sh(f"PODMAN_IGNORE_CGROUPSV1_WARNING=1 podman pull -q {reference}", check=False, timeout=180)

    assert podman_pull(f"docker.io/{hub}:1").returncode != 0, "nothing serves it before"
    apply_twice(stack, "podman5")
    drop_in = host.read(f"{registries_d}/50-registry-stack-{stack.stack}.conf")
    assert drop_in is not None and b'prefix = "ghcr.io"' in drop_in
    assert host.read(f"/etc/containers/certs.d/{stack.cache_address('docker')}/ca.crt") == stack.ca_pem.encode()

    for reference, role, repository in both_upstreams(hub, ghcr):
        pulled = podman_pull(reference)
        assert pulled.returncode == 0, f"{reference}: {pulled.stdout}{pulled.stderr}"
        assert manifest_requested(stack.cache_log(role), repository)

    report_of(stack.run("podman5", "remove"))
    assert listing(host, registries_d) == before
    assert listing(host, "/etc/containers/certs.d", "/var/lib/registry-stack") == ""
    other = f"org/{unique_repository('podman-after')}"
    seed(stack.ghcr, other)
    assert podman_pull(f"ghcr.io/{other}:1").returncode != 0, "without the drop-in the cache is out of reach again"
