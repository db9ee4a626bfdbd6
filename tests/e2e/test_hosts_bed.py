"""The host bed itself: real engines of the versions users run, reachable only as intended.

Every later host test rests on these facts, so they are checked, not assumed: which
engine and image store each host runs, that SSH takes the key and refuses a host key
other than the pinned one, that the sudoer needs sudo, and that the real upstreams are
out of reach from every host.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.host_stack import HUB_ALIAS, run_like_remote_command
from tests.e2e.hosts import Host, HostBed, new_ssh_key


def major(version: str) -> int:
    match = re.match(r"v?(\d+)\.", version.strip())
    assert match, version
    return int(match.group(1))


def docker_info(host: Host) -> dict:
    return json.loads(host.sh("docker info --format '{{json .}}'").stdout)


def test_docker_hosts_run_current_engines_with_both_image_stores(host_machines: HostBed) -> None:
    new, new_containerd, old = (host_machines.hosts[n] for n in ("docker28", "docker28-containerd", "docker26"))
    assert major(docker_info(new)["ServerVersion"]) >= 28
    assert docker_info(new)["Driver"] == "overlay2", "the graph-driver image store"
    info = docker_info(new_containerd)
    assert major(info["ServerVersion"]) >= 28
    assert ["driver-type", "io.containerd.snapshotter.v1"] in info["DriverStatus"], "the containerd image store"
    assert major(docker_info(old)["ServerVersion"]) == 26, "trixie (stable) ships Docker 26"


def test_containerd_and_podman_hosts(host_machines: HostBed) -> None:
    containerd = host_machines.hosts["containerd2"]
    server = containerd.sh("ctr version").stdout.split("Server:", 1)[1]
    assert major(re.search(r"Version:\s+(\S+)", server).group(1)) >= 2
    assert containerd.sh("pidof dockerd", check=False).returncode != 0, "containerd alone, no dockerd"
    podman = host_machines.hosts["podman5"]
    assert major(podman.sh("podman version --format '{{.Client.Version}}'").stdout) >= 5


@pytest.mark.parametrize("user", ["root", "deploy"])
def test_ssh_takes_the_key_and_pins_the_host_key(host_machines: HostBed, user: str) -> None:
    host = host_machines.hosts["docker26"]
    assert host_machines.ssh_key is not None
    connection = {"host": host.address, "port": 22, "user": user, "privateKey": host_machines.ssh_key.private_openssh}
    ok = run_like_remote_command(connection, "id -un; cat", "from stdin\n", pinned_host_key=host.host_key)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"{user}\nfrom stdin\n"

    other_host_key = host_machines.hosts["docker28"].host_key
    assert other_host_key != host.host_key, "every host has its own host keys"
    refused = run_like_remote_command(connection, "true", "", pinned_host_key=other_host_key)
    assert refused.returncode != 0 and "HOST IDENTIFICATION HAS CHANGED" in refused.stderr

    stranger = {**connection, "privateKey": new_ssh_key().private_openssh}
    denied = run_like_remote_command(stranger, "true", "", pinned_host_key=host.host_key)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr


def test_the_sudoer_needs_sudo(host_machines: HostBed) -> None:
    host = host_machines.hosts["docker26"]
    assert host.sh("su deploy -c 'touch /etc/docker/x'", check=False).returncode != 0
    assert host.sh("su deploy -c 'docker info'", check=False).returncode != 0, "deploy is not in the docker group"
    assert host.sh("su deploy -c 'sudo -n true'").returncode == 0


def test_the_real_upstreams_are_out_of_reach_on_every_host(host_machines: HostBed) -> None:
    for host in host_machines.hosts.values():
        for name in (HUB_ALIAS, "ghcr.io", "quay.io"):
            probe = host.sh(f"curl -sS --max-time 5 -o /dev/null https://{name}/v2/", check=False)
            assert probe.returncode != 0, f"{host.name} reached {name}"
