"""Config of where the stack runs: one Docker host, or a Docker Swarm (issue 15).

Keys (config_schema.py has their types and defaults):

- `orchestrator`: `docker` (containers on one engine, as always) or `swarm` (services);
- `swarmNodes`: the nodes that each run a front, the caches and the agent (swarm mode);
- `buildReplicas`: tasks of the build registry (swarm mode);
- `buildStorage`: the build registry's object storage, `s3://<bucket>[/<prefix>]?region=<r>
  [&endpoint=<URL>]` (distribution's `s3` driver), or empty for a volume;
- `buildStorageCredentials` (secret): `<accessKey>:<secretKey>` for it.

`read_topology` is a pure function of those values, so every error is tested without mocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from .config_schema import ConfigError, key, ref
from .secret import Secret

DOCKER = "docker"
SWARM = "swarm"
ORCHESTRATORS = (DOCKER, SWARM)

# A node's hostname as `docker node ls` shows it; also a suffix of service names (DNS labels).
_NODE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
# S3 bucket names (AWS rules, path-style subset): 3-63 of lowercase letters, digits, '.', '-'.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9-]{1,32}$")
STORAGE_FORMAT = '"s3://<bucket>[/<prefix>]?region=<region>[&endpoint=http(s)://host:port]"'
STORAGE_OPTIONS = ("region", "endpoint")


@dataclass(frozen=True)
class S3Storage:
    """The build registry's bucket (distribution's `s3` storage driver)."""

    bucket: str
    region: str
    # An S3-compatible store's URL (distribution's `regionendpoint`); empty means AWS itself.
    endpoint: str = ""
    # Key prefix in the bucket (distribution's `rootdirectory`).
    prefix: str = ""
    access_key: str = ""
    secret_key: Secret | None = None

    @property
    def secure(self) -> bool:
        """https to the store: always for AWS, as the endpoint says for another store."""
        return not self.endpoint.startswith("http://")


@dataclass(frozen=True)
class Topology:
    """Where the stack's registries and fronts run."""

    orchestrator: str = DOCKER
    nodes: tuple[str, ...] = ()
    build_replicas: int = 1
    build_storage: S3Storage | None = None

    @property
    def is_swarm(self) -> bool:
        return self.orchestrator == SWARM

    @property
    def build_node(self) -> str:
        """The node a volume-backed build registry is bound to (its volume lives there)."""
        return self.nodes[0] if self.nodes else ""


def read_topology(
    orchestrator: str, nodes: list[str], build_replicas: int, storage: str, credentials: str
) -> Topology:
    """The typed values of the five keys, checked together."""
    if orchestrator not in ORCHESTRATORS:
        raise key("orchestrator").invalid(orchestrator, f"expected one of {', '.join(ORCHESTRATORS)}")
    topology = Topology(
        orchestrator=orchestrator,
        nodes=_nodes(nodes),
        build_replicas=build_replicas,
        build_storage=_storage(storage, credentials),
    )
    _check_swarm_keys(topology)
    return topology


def _nodes(entries: list[str]) -> tuple[str, ...]:
    nodes: list[str] = []
    for index, entry in enumerate(entries):
        node = entry.strip().lower()
        if not _NODE.match(node):
            raise ConfigError(
                f"{ref('swarmNodes')}[{index}]={entry!r} is not a node hostname this stack can name services "
                "after: use the HOSTNAME column of `docker node ls` (letters, digits and '-', at most 32)"
            )
        if node in nodes:
            raise ConfigError(f"{ref('swarmNodes')}[{index}]={entry!r} is listed twice: list each node once")
        nodes.append(node)
    return tuple(nodes)


def _storage(value: str, credentials: str) -> S3Storage | None:
    if not value:
        if credentials:
            raise ConfigError(
                f"{ref('buildStorageCredentials')} is set but {ref('buildStorage')} is empty: set the bucket "
                f"({STORAGE_FORMAT}) or remove the credentials"
            )
        return None
    name = ref("buildStorage")
    parts = urlsplit(value)
    if parts.scheme != "s3" or not _BUCKET.match(parts.netloc or ""):
        raise ConfigError(
            f"{name}={value!r} is invalid: expected {STORAGE_FORMAT} with a bucket name of 3-63 lowercase "
            "letters, digits, '.' and '-'"
        )
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - set(STORAGE_OPTIONS))
    if unknown:
        raise ConfigError(
            f"{name}={value!r} has the unknown option {unknown[0]!r}: the options are {', '.join(STORAGE_OPTIONS)}"
        )
    region = options.get("region", "")
    if not _REGION.match(region):
        raise ConfigError(
            f"{name}={value!r} needs its bucket's region, e.g. ?region=us-east-1 (an S3-compatible store "
            "takes any name it accepts, often us-east-1)"
        )
    endpoint = options.get("endpoint", "")
    endpoint_parts = urlsplit(endpoint)
    if endpoint and (endpoint_parts.scheme not in ("http", "https") or not endpoint_parts.hostname
                     or endpoint_parts.path not in ("", "/")):
        raise ConfigError(
            f"{name}={value!r} has endpoint={endpoint!r}: give the store's base URL, http(s)://host[:port]"
        )
    access_key, secret_key = _credentials(credentials)
    return S3Storage(
        bucket=parts.netloc, region=region, endpoint=endpoint.rstrip("/"), prefix=parts.path.strip("/"),
        access_key=access_key, secret_key=secret_key,
    )


def _credentials(value: str) -> tuple[str, Secret | None]:
    if not value:
        return "", None
    access_key, separator, secret_key = value.strip().partition(":")
    if not separator or not access_key or not secret_key:
        raise key("buildStorageCredentials").invalid(
            value, "expected \"<accessKey>:<secretKey>\" (set it with `pulumi config set --secret "
            f"{ref('buildStorageCredentials')} '<accessKey>:<secretKey>'`)"
        )
    return access_key, Secret(secret_key)


def _check_swarm_keys(topology: Topology) -> None:
    if not topology.is_swarm:
        if topology.nodes:
            raise ConfigError(
                f"{ref('swarmNodes')} is set but {ref('orchestrator')}={topology.orchestrator!r}: the nodes are "
                "used in swarm mode only. Set orchestrator to swarm, or remove swarmNodes"
            )
        if topology.build_replicas > 1:
            raise ConfigError(
                f"{ref('buildReplicas')}={topology.build_replicas} needs {ref('orchestrator')}=swarm: one Docker "
                "host runs one build registry. Set orchestrator to swarm, or buildReplicas to 1"
            )
        return
    if not topology.nodes:
        raise ConfigError(
            f"{ref('orchestrator')}=swarm but {ref('swarmNodes')} is empty: list the nodes that run a front and "
            f"the caches, e.g. `pulumi config set --path '{ref('swarmNodes')}[0]' node1` (`docker node ls` "
            "shows their hostnames)"
        )
    if topology.build_replicas > 1 and topology.build_storage is None:
        raise ConfigError(
            f"{ref('buildReplicas')}={topology.build_replicas} needs {ref('buildStorage')}: replicas on "
            "volumes would each hold other images (a volume is local to its node). Set buildStorage to a "
            f"bucket ({STORAGE_FORMAT}), or buildReplicas to 1"
        )
