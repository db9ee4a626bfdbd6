"""DaemonMirror over real SSH on real Docker hosts: Docker 28 (both image stores) and Docker 26.

The stack lists every host of the bed in `mirrorHosts` (ssh://, hostKey pinned, the
Docker 26 host through a sudoer). Each host's declared remote.Command is run as
pulumi-command runs it (tests/e2e/host_stack.py), and the host is then used for real:

1. before: a Docker Hub name that only the cache can serve does not pull (the hosts have
   no way to the real upstreams);
2. apply, then apply again: the second run changes nothing;
3. the Hub name pulls, and the cache's access log shows the request; on Docker 28 with the
   containerd image store a ghcr.io name pulls through ghcr-cache too, by its own name
   (hosts.toml); elsewhere DaemonMirror's report says why not, and the pull indeed fails;
4. remove: daemon.json has its original bytes again (or is gone), the files are gone,
   the same dockerd still runs and the host's own container was never restarted.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest

from testbed.hosts_file import HOSTS_CACHE_SECONDS
from tests.e2e.host_stack import (
    HostStack,
    Standin,
    manifest_requested,
    seed,
    unique_repository,
)
from tests.e2e.hosts import Host

SLEEPER = "registry-stack-sleeper"


@dataclass(frozen=True)
class DockerCase:
    host: str
    containerd_store: bool
    non_hub_transparent: bool


CASES = [
    DockerCase("docker28", containerd_store=False, non_hub_transparent=False),
    DockerCase("docker28-containerd", containerd_store=True, non_hub_transparent=True),
    DockerCase("docker26", containerd_store=False, non_hub_transparent=False),
]


def start_sleeper(host: Host) -> str:
    """A container of the host's own engine, made from the host's busybox: its start time must not change."""
    host.sh(
        "set -e; d=$(mktemp -d); mkdir -p $d/bin; cp /bin/busybox $d/bin/;"
        f" tar -C $d -c . | docker import - {SLEEPER}:1 >/dev/null;"
        f" docker run -d --name {SLEEPER} --network none {SLEEPER}:1 /bin/busybox sleep 100000 >/dev/null"
    )
    return started_at(host)


def started_at(host: Host) -> str:
    return host.sh(f"docker inspect -f '{{{{.State.StartedAt}}}} {{{{.State.Running}}}}' {SLEEPER}").stdout.strip()


def report_of(result) -> dict:
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def diagnose(stack: HostStack, host: Host, result, report: dict) -> str:
    dockerd_log = host.sh("tail -n 15 /var/log/dockerd.log", check=False).stdout
    cache_log = stack.cache_log("cache")[-2500:]
    return f"{result.stdout}\n{result.stderr}\nreport: {report}\ndockerd:\n{dockerd_log}\ncache:\n{cache_log}"


def assert_hub_pulls_verify_the_cache(stack: HostStack, host: Host, hub: Standin) -> None:
    """Why the containerd store gets certs.d/docker.io/hosts.toml, not only registry-mirrors.

    With hosts.toml the cache's certificate is checked against its `ca`: without that file
    the pull fails. Through registry-mirrors alone, Docker 28's containerd store does not
    check the mirror's certificate at all: with no CA anywhere on the host, it pulls.
    """
    certs_d = "/etc/docker/certs.d"
    ca = f"{certs_d}/{stack.cache_address('docker')}/ca.crt"
    assert b"[host." in (host.read(f"{certs_d}/docker.io/hosts.toml") or b"")
    checked = f"library/{unique_repository('checked')}"
    seed(hub, checked)
    host.sh(f"mv {ca} /tmp/cache-ca.crt")
    try:
        refused = pull(host, checked.removeprefix("library/") + ":1")
        assert refused.returncode != 0 and "ca.crt" in refused.stderr, refused.stderr
    finally:
        host.sh(f"mv /tmp/cache-ca.crt {ca}")

    unchecked = f"library/{unique_repository('unchecked')}"
    seed(hub, unchecked)
    host.sh(f"mv {certs_d} /tmp/certs.d-aside")
    try:
        through_mirror = pull(host, unchecked.removeprefix("library/") + ":1")
        assert through_mirror.returncode == 0, (
            "Docker now checks a registry-mirrors mirror's certificate with the containerd store: "
            f"update the README's client matrix\n{through_mirror.stderr}"
        )
    finally:
        host.sh(f"rm -rf {certs_d}; mv /tmp/certs.d-aside {certs_d}")


def pull(host: Host, reference: str):
    return host.sh(f"docker pull {reference}", check=False, timeout=180)


@pytest.mark.parametrize("case", CASES, ids=[c.host for c in CASES])
def test_daemon_mirror_over_ssh_on_a_real_docker_host(hosts_stack: HostStack, case: DockerCase) -> None:
    stack, host = hosts_stack, hosts_stack.host(case.host)
    recorded = stack.commands[case.host]
    assert recorded["connection"]["hostKey"] == host.host_key, "the entry's hostKey reaches the connection"
    assert recorded["create"].startswith("sudo -n ") == (case.host == "docker26")
    hub_repo, ghcr_repo = f"library/{unique_repository(case.host)}", f"org/{unique_repository(case.host)}"
    seed(stack.hub, hub_repo)
    seed(stack.ghcr, ghcr_repo)
    hub_name, ghcr_name = f"{hub_repo.removeprefix('library/')}:1", f"ghcr.io/{ghcr_repo}:1"

    original = host.read("/etc/docker/daemon.json")
    sleeper_since = start_sleeper(host)
    dockerd = host.pid_of("dockerd")

    # 1. Nothing can serve the names yet.
    assert pull(host, hub_name).returncode != 0
    assert pull(host, ghcr_name).returncode != 0

    # 2. apply, twice.
    applied = report_of(stack.run(case.host, "apply"))
    docker = applied["docker"]
    assert docker["image_store"] == ("containerd" if case.containerd_store else "graph driver")
    cache_url = f"https://{stack.cache_address('docker')}"
    assert docker["transparent"]["docker.io"] == cache_url
    assert ("ghcr.io" in docker["transparent"]) == case.non_hub_transparent
    assert ("ghcr.io" in docker["not_transparent"]) != case.non_hub_transparent
    assert json.loads(host.read("/etc/docker/daemon.json"))["registry-mirrors"][-1] == cache_url
    assert host.read(f"/etc/docker/certs.d/{stack.cache_address('docker')}/ca.crt").decode() == stack.ca_pem
    again = report_of(stack.run(case.host, "apply"))
    assert again["changed"] == [], again
    # dockerd (Go's resolver) re-reads /etc/hosts at most every 5 s: the registry names
    # etcHosts just added may not resolve before that.
    time.sleep(HOSTS_CACHE_SECONDS)

    # 3. Used for real, through the caches.
    try:
        pulled = pull(host, hub_name)
        assert pulled.returncode == 0, diagnose(stack, host, pulled, docker)
        assert manifest_requested(stack.cache_log("cache"), hub_repo)
        if case.containerd_store:
            assert_hub_pulls_verify_the_cache(stack, host, stack.hub)
        through_ghcr = pull(host, ghcr_name)
        if case.non_hub_transparent:
            assert through_ghcr.returncode == 0, f"{through_ghcr.stdout}\n{through_ghcr.stderr}"
            assert manifest_requested(stack.cache_log("ghcr-cache"), ghcr_repo)
        else:
            assert through_ghcr.returncode != 0, "the report says ghcr.io is not transparent here"
            assert "pull ghcr-cache." in docker["not_transparent"]["ghcr.io"]
            explicit = f"{stack.cache_address('ghcr')}/{ghcr_repo}:1"
            assert pull(host, explicit).returncode == 0, "the way the report names works"
    finally:
        host.sh(f"docker image rm -f {hub_name} {ghcr_name} >/dev/null 2>&1; true")

    # 4. remove: all back, nothing restarted.
    removed = report_of(stack.run(case.host, "remove"))
    assert removed["action"] == "remove"
    assert host.read("/etc/docker/daemon.json") == original
    leftovers = host.sh("ls /etc/docker/certs.d 2>/dev/null; ls /var/lib/registry-stack 2>/dev/null; true").stdout
    assert leftovers.strip() == "", leftovers
    assert host.pid_of("dockerd") == dockerd
    assert started_at(host) == sleeper_since
    mirrors = json.loads(host.sh("docker info --format '{{json .RegistryConfig.Mirrors}}'").stdout) or []
    assert not any(cache_url in m for m in mirrors)
    host.sh(f"docker rm -f {SLEEPER} >/dev/null; docker image rm -f {SLEEPER}:1 >/dev/null")


def test_a_first_address_that_times_out_makes_dockerd_give_up_the_mirror(hosts_stack: HostStack) -> None:
    """A powered-off swarm node does not refuse: its address swallows the connection attempt.

    Every host's etcHosts lists its own address (where nothing listens) first. Here that
    address drops packets to the stack's port instead, as a node that is off does. Go's dialer
    gives the first of two addresses half of dockerd's 30 s dial timeout (net/dial.go
    partialDeadline), and dockerd's /v2/ ping of a mirror has a 15 s client timeout of its own:
    the two expire together. Mostly the ping's fires first and dockerd gives up the mirror for
    Docker Hub; when the dial's does, the next address serves. Either way the dropping address
    costs the whole 15 s, which is what this asserts (and which the README says: take a node
    that is off out of the clients' names). Once the address answers again (refuses, here),
    the next pull goes through the mirror without a restart.
    """
    case = CASES[0]
    stack, host = hosts_stack, hosts_stack.host(case.host)
    repository = f"library/{unique_repository('timeout')}"
    seed(stack.hub, repository)
    name = f"{repository.removeprefix('library/')}:1"
    applied = report_of(stack.run(case.host, "apply"))
    time.sleep(HOSTS_CACHE_SECONDS)
    drop = f"OUTPUT -d {host.address} -p tcp --dport {stack.https_port} -j DROP"
    host.sh(f"iptables -I {drop}")
    dropping = True
    try:
        probe = host.sh(f"timeout 3 bash -c 'exec 3<>/dev/tcp/{host.address}/{stack.https_port}'; echo $?",
                        check=False, timeout=30).stdout.split()
        assert probe[-1:] == ["124"], f"the first address should time out (124), not refuse: {probe}"
        started = time.monotonic()
        attempt = pull(host, name)
        seconds = time.monotonic() - started
        log = host.sh("tail -n 60 /var/log/dockerd.log", check=False).stdout
        outcome = "pulled through the next address" if attempt.returncode == 0 else "gave up the mirror"
        print(f"\n{case.host}: first address dropping, dockerd {outcome} after {seconds:.0f} s")
        assert seconds >= 14, f"dockerd no longer waits on a dropping first address ({seconds:.0f} s): fix the README"
        if attempt.returncode != 0:  # the ping's timeout, as Go words it depending on which fired
            timed_out = ("Client.Timeout exceeded", "context deadline exceeded")
            assert stack.cache_address("docker") in log and any(words in log for words in timed_out), log
        host.sh(f"iptables -D {drop}")
        dropping = False
        pulled = pull(host, name)
        assert pulled.returncode == 0, diagnose(stack, host, pulled, applied["docker"])
        assert manifest_requested(stack.cache_log("cache"), repository)
    finally:
        host.sh(("iptables -D " + drop + "; " if dropping else "") + f"docker image rm -f {name} >/dev/null 2>&1; true",
                check=False)
        stack.run(case.host, "remove")
