"""A three-node Docker Swarm test bed, made of the host bed's Debian sid machines (Docker 28).

(shared/reference/platform.md: three such hosts on one network form a swarm in ~3 s; overlay
networks work; this kernel has no IPVS, so the stack uses `dnsrr` and host-mode ports.)

- the nodes boot as the host bed's hosts do (tests/e2e/hosts.py), dockerd listening on its
  socket and on tcp://<address>:2375 of the bed network (a test bed only: no TLS, reachable
  from this machine and the bed's containers, nothing else), so the realizer and the tests
  drive each node's engine with the Docker SDK;
- `docker swarm init --advertise-addr <node1>` and a join from each other node, node1 the
  manager (the program's provider would point at it);
- nothing can be pulled: every local image the stack runs is `docker save`d here and
  `docker load`ed into each node (the nodes are new every run, so this is done per bed,
  the three nodes in parallel);
- `stop_engine(node)` / `start_engine(node)` kill and restart one node's dockerd (node loss).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import docker

from testbed import E2E_STACK_LABEL, images
from testbed.stack import remove_leftovers
from tests.e2e import hosts as host_bed_module
from tests.e2e.host_stack import Standin, start_named_standin
from tests.e2e.hosts import Host, HostBed, HostSpec

ENGINE_PORT = 2375
NODE_NAMES = ("node1", "node2", "node3")
# dockerd >= 27 refuses an unencrypted TCP socket unless `tls: false` says it is meant.
NODE_DAEMON_JSON = {"hosts": ["unix:///var/run/docker.sock", f"tcp://0.0.0.0:{ENGINE_PORT}"], "tls": False}


@dataclass
class SwarmBed:
    """Three booted nodes in one swarm; `manager` is the first."""

    bed: HostBed
    nodes: dict[str, Host] = field(default_factory=dict)
    clients: dict[str, docker.DockerClient] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def manager(self) -> docker.DockerClient:
        return self.clients[NODE_NAMES[0]]

    def address(self, node: str) -> str:
        return self.nodes[node].address

    def stop_engine(self, node: str) -> int:
        """The node is lost: its dockerd and every container on it stop at once; how many of its
        tasks' processes had to be killed after the engine.

        Killing dockerd, containerd and the shims is not enough: the tasks' processes outlive them
        (the node's init adopts them) and a front kept serving. A lost machine runs none of them,
        so every process in a pid namespace other than the node's own is killed too.
        """
        host = self.nodes[node]
        host.sh("pkill -9 dockerd; pkill -9 containerd-shim || true; pkill -9 containerd || true", check=False)
        script = ('own=$(readlink /proc/1/ns/pid); n=0; for p in /proc/[0-9]*; do '
                  'ns=$(readlink "$p/ns/pid" 2>/dev/null) || continue; [ "$ns" = "$own" ] && continue; '
                  'kill -9 "${p#/proc/}" 2>/dev/null && n=$((n + 1)); done; echo "$n"')
        return int(host.sh(script).stdout.strip())

    def start_engine(self, node: str, seconds: int = 120) -> None:
        """The node comes back: dockerd starts again (its pid files are stale after a kill -9).

        A restarted dockerd first cleans up the containers that died with it and rejoins the
        raft; on a loaded machine that takes longer than a first boot, hence the long wait.
        """
        host = self.nodes[node]
        host.sh("rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid; "
                "(dockerd >/var/log/dockerd.log 2>&1 &)")
        result = host.sh(f"for i in $(seq {seconds * 5}); do docker info >/dev/null 2>&1 && exit 0; "
                         "sleep 0.2; done; exit 1", check=False, timeout=seconds + 30)
        if result.returncode != 0:
            log = host.sh("tail -n 30 /var/log/dockerd.log", check=False).stdout
            raise AssertionError(f"{node}: dockerd did not come back in {seconds} s:\n{log}")


def node_specs() -> tuple[HostSpec, ...]:
    return tuple(HostSpec(name, host_bed_module.SID, "dockerd", daemon_json=NODE_DAEMON_JSON) for name in NODE_NAMES)


def load_images(bed: SwarmBed, tags: Sequence[str]) -> None:
    """`docker save` each image once, `docker load` it into every node (in parallel)."""
    archive = subprocess.run(["docker", "save", *tags], capture_output=True, check=True, timeout=600).stdout

    def load(host: Host) -> None:
        subprocess.run(["docker", "exec", "-i", host.container.name, "docker", "load", "-q"],
                       input=archive, capture_output=True, check=True, timeout=600)

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(bed.nodes)) as pool:
        list(pool.map(load, bed.nodes.values()))


def form_swarm(bed: SwarmBed) -> None:
    manager, *workers = NODE_NAMES
    bed.nodes[manager].sh(f"docker swarm init --advertise-addr {bed.address(manager)}")
    token = bed.nodes[manager].sh("docker swarm join-token -q manager").stdout.strip()
    # Every node a manager: losing one of three keeps the raft quorum (2 of 3), as a small site
    # that must survive a node runs it.
    for worker in workers:
        bed.nodes[worker].sh(
            f"docker swarm join --advertise-addr {bed.address(worker)} --token {token} {bed.address(manager)}:2377")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = [n for n in bed.manager.nodes.list() if n.attrs["Status"]["State"] == "ready"]
        if len(ready) == len(NODE_NAMES):
            return
        time.sleep(0.5)
    raise AssertionError("the swarm did not form: " + bed.nodes[manager].sh("docker node ls", check=False).stdout)


@contextlib.contextmanager
def swarm_bed(client: docker.DockerClient, network: str, prefix: str, labels: dict[str, str],
              images: Sequence[str]) -> Iterator[SwarmBed]:
    """Boot the nodes on `network`, form the swarm, load `images`; remove it all afterwards."""
    started = time.monotonic()
    host_bed_module.build_host_images((host_bed_module.SID,))
    built = time.monotonic()
    key = host_bed_module.new_ssh_key()
    with host_bed_module.host_bed(client, node_specs(), network, prefix, key, labels=labels) as bed:
        swarm = SwarmBed(bed=bed, nodes=dict(bed.hosts))
        swarm.clients = {
            name: docker.DockerClient(base_url=f"tcp://{host.address}:{ENGINE_PORT}", timeout=120)
            for name, host in swarm.nodes.items()
        }
        booted = time.monotonic()
        form_swarm(swarm)
        formed = time.monotonic()
        load_images(swarm, images)
        swarm.timings = {"host image": built - started, "boot": booted - built, "swarm": formed - booted,
                         "images": time.monotonic() - formed}
        yield swarm


# What every swarm stack runs (its registries, front, agent and herd tier), loaded into the nodes.
STACK_IMAGES = (images.REGISTRY.tag, images.CADDY.tag, images.PYTHON.tag, images.VARNISH.tag)


@dataclass
class BedNetwork:
    """The bed's network on this engine, with the stand-in upstream the stack caches."""

    name: str
    labels: dict[str, str]
    standin: Standin
    upstream_url: str  # http://<address>: the nodes' tasks reach it through their gateway


@contextlib.contextmanager
def bed_network(client: docker.DockerClient, stack: str, upstream_alias: str) -> Iterator[BedNetwork]:
    """A fresh bed network (a previous run's leftovers removed) and a stand-in upstream on it;
    everything of `stack` removed afterwards."""
    labels = {E2E_STACK_LABEL: stack}
    host_bed_module.remove_leftover_hosts(client, labels)
    remove_leftovers(client, stack)
    name = f"registry-stack-{stack}-bed"
    with contextlib.suppress(docker.errors.NotFound):
        client.networks.get(name).remove()
    client.networks.create(name, driver="bridge", labels=labels)
    try:
        standin = start_named_standin(client, name, stack, upstream_alias)
        container = client.containers.get(standin.container)
        address = container.attrs["NetworkSettings"]["Networks"][name]["IPAddress"]
        yield BedNetwork(name, labels, standin, f"http://{address}")
    finally:
        remove_leftovers(client, stack)
        with contextlib.suppress(docker.errors.APIError):
            client.networks.get(name).remove()


def basic_auth(users: Sequence[str], user: str) -> str:
    """The Authorization header of `user` among `users` entries (`name:password`)."""
    password = next(entry.split(":", 1)[1] for entry in users if entry.startswith(f"{user}:"))
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
