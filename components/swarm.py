"""The stack as Docker Swarm services (orchestrator=swarm): the same settings, the same files.

What runs where (README "More than one host"):

- the **build registry**: one replicated service (`buildReplicas`, `endpoint_mode: dnsrr`),
  on the bucket of `buildStorage` so any task serves any push and pull; rolled `start-first`,
  so a new task serves before the old one stops. Without a bucket: one task, bound to
  `swarmNodes[0]`, where its volume is;
- **per node** of `swarmNodes`: the front (TLS + basic auth, host-mode ports), and per upstream
  a cache with its standby and herd tier, and the agent, each a service bound to that node, on
  that node's volumes. Why a service per node and not one global service: the front must reach
  the cache *of its own node* (a proxy's storage is not shared, distribution issue 4594), and
  without VIPs (`dnsrr`) only a service's own name resolves to just its tasks; a service per
  node gives each node's roles names of their own (`<prefix>-<role>-<node>`, naming.py), so the
  renderers write the same files as on one host, with the node's names;
- one node after the other: every service of a node depends on the previous node's front, so
  an update (a new user, a new image) rolls through the nodes one at a time while the others
  serve. A node-bound service is rolled `stop-first` (its host port, its volume);
- files: what carries a secret (an Output) becomes a swarm **secret**, the rest a swarm
  **config**, both named after their content (`<prefix>-<file>-<hash>`): both are immutable in
  swarm, so new content is a new object, created before the service moves to it and deleted
  after (kreuzwerker's docker_secret/docker_config: `data` and `name` force a new resource).

- ACME (components/tls_share.py): the front of `swarmNodes[0]` orders the certificates and
  lends them to the other fronts over pinned TLS; the others forward challenges to it and
  serve copies.

The overlay network is attachable, so the verification container (and a test client) can join it.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from . import agent, herd, metrics, naming, renderers, tls_share
from .settings import Settings, Upstream

LABEL_STACK = "registry-stack.stack"
LABEL_ROLE = "registry-stack.role"
LABEL_FILE = "registry-stack.file"
# How long the provider waits for a service's tasks to run (its converge_config).
CONVERGE_TIMEOUT = "3m"
_SLUG = re.compile(r"[^a-z0-9]+")

FileContent = pulumi.Input[str]
ConfigMount = docker.ServiceTaskSpecContainerSpecConfigArgs
SecretMount = docker.ServiceTaskSpecContainerSpecSecretArgs


@dataclass
class ServiceSpec:
    """One service: what differs between the roles."""

    role: str
    image: str
    files: dict[str, FileContent]
    mounts: list[docker.ServiceTaskSpecContainerSpecMountArgs] = field(default_factory=list)
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    healthcheck: docker.ServiceTaskSpecContainerSpecHealthcheckArgs | None = None
    ports: list[docker.ServiceEndpointSpecPortArgs] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    replicas: int = 1
    constraints: list[str] = field(default_factory=list)
    start_first: bool = False
    depends_on: list[pulumi.Resource] = field(default_factory=list)


@dataclass(frozen=True)
class ShareMaterial:
    """ACME in swarm mode: how the orderer lends its certificates (components/tls_share.py)."""

    auth_header: pulumi.Input[str]  # what the copies send (basic auth with the token)
    cert_pem: pulumi.Input[str]  # the share listener's certificate, which the copies pin
    key_pem: pulumi.Input[str]  # its key (the orderer's only)


def file_object_name(prefix: str, service: str, path: str, content: str) -> str:
    """`<prefix>-<file>-<hash>`: a new name for new content (swarm configs and secrets are immutable).

    The hash covers the service and path too, so two services' identical files (each node's
    cache config, say) stay two objects with two names; at most 64 characters, the limit of a
    swarm object's name.
    """
    digest = hashlib.sha256(f"{service}\0{path}\0{content}".encode()).hexdigest()[:12]
    stem = _SLUG.sub("-", posixpath.basename(path).lower()).strip("-") or "file"
    return f"{prefix}-{stem}"[: 64 - 13] + f"-{digest}"


def node_constraint(node: str) -> str:
    return f"node.hostname=={node}"


def http_healthcheck(url: str) -> docker.ServiceTaskSpecContainerSpecHealthcheckArgs:
    # busybox wget is in the registry and caddy images (both Alpine based), as for containers.
    return docker.ServiceTaskSpecContainerSpecHealthcheckArgs(
        tests=["CMD", "wget", "-q", "-O", "/dev/null", url],
        interval="10s", timeout="5s", retries=3, start_period="10s",
    )


class SwarmServices:
    """Declares the stack's services, configs, secrets and overlay network (see the module doc)."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        parent: pulumi.Resource,
        front_config: Callable[[Settings], pulumi.Input[str]],
        cache_config: Callable[[Upstream], pulumi.Input[str]],
        build_config: pulumi.Input[str],
        tls_files: dict[str, FileContent],
        share: ShareMaterial | None = None,
    ) -> None:
        self._name = name
        self._settings = settings
        self._parent = parent
        # ACME: what the orderer lends its certificates with (components/tls_share.py).
        self._share = share
        self.services: dict[str, docker.Service] = {}
        # The services name the network by id: by name, the provider would replace them on every
        # update (pulumi-docker ServiceTaskSpecNetworksAdvancedArgs: "name is deprecated").
        self.network, self._network_id = self._network()
        major = settings.registry_major_version
        if settings.enable_build:
            self._add(self._build(build_config))
        previous_front: docker.Service | None = None
        for scoped in settings.scopes():
            after: list[pulumi.Resource] = [previous_front] if previous_front is not None else []
            node_services = self._node_services(scoped, cache_config, major, after)
            for spec in node_services:
                self._add(spec, scoped.node)
            front = self._add(self._front(scoped, front_config(scoped), tls_files, after), scoped.node)
            previous_front = front

    # -- roles ----------------------------------------------------------------------------

    def _build(self, config: pulumi.Input[str]) -> ServiceSpec:
        settings = self._settings
        topology = settings.topology
        major = settings.registry_major_version
        in_bucket = topology.build_storage is not None
        return ServiceSpec(
            role=naming.BUILD,
            image=settings.registry_image,
            files={renderers.registry_config_path(major): config},
            mounts=[] if in_bucket else [self._volume(naming.BUILD, renderers.REGISTRY_DATA_DIR)],
            env=renderers.registry_environment(major),
            healthcheck=http_healthcheck(f"http://127.0.0.1:{renderers.REGISTRY_PORT}/v2/"),
            replicas=topology.build_replicas,
            # Its volume is on one node; in a bucket, any node serves.
            constraints=[] if in_bucket else [node_constraint(topology.build_node)],
            # Two tasks on one bucket are what replicas are anyway: the new one serves first.
            start_first=in_bucket,
        )

    def _node_services(
        self, scoped: Settings, cache_config: Callable[[Upstream], pulumi.Input[str]], major: int,
        after: list[pulumi.Resource],
    ) -> list[ServiceSpec]:
        names = scoped.names
        registry_files = renderers.registry_config_path(major)
        health = http_healthcheck(f"http://127.0.0.1:{renderers.REGISTRY_PORT}/v2/")
        env = renderers.registry_environment(major)
        specs: list[ServiceSpec] = []
        for upstream in scoped.caches:
            data = self._volume(upstream.role, renderers.REGISTRY_DATA_DIR)
            specs.append(ServiceSpec(
                role=upstream.role, image=scoped.registry_image, files={registry_files: cache_config(upstream)},
                mounts=[data], env=env, healthcheck=health, depends_on=after,
            ))
            specs.append(ServiceSpec(
                role=upstream.standby_role, image=scoped.registry_image,
                files={registry_files: renderers.standby_registry_config(upstream, major)},
                mounts=[data], env=env, healthcheck=health, depends_on=after,
            ))
            cache, standby = names.container(upstream.role), names.container(upstream.standby_role)
            specs.append(ServiceSpec(
                role=naming.herd_role(upstream.name), image=scoped.herd_image,
                files={
                    herd.HERD_VCL_PATH: herd.herd_vcl(cache, standby, renderers.REGISTRY_PORT),
                    herd.HERD_SCRIPT_PATH: herd.herd_start_script(cache, standby),
                },
                command=["sh", herd.HERD_SCRIPT_PATH],
                healthcheck=docker.ServiceTaskSpecContainerSpecHealthcheckArgs(
                    tests=["CMD", "varnishadm", "-n", herd.HERD_WORKDIR, "ping"],
                    interval="10s", timeout="5s", retries=3, start_period="10s",
                ),
                depends_on=after,
            ))
        if scoped.caches:
            specs.append(self._agent(scoped, after))
        return specs

    def _agent(self, scoped: Settings, after: list[pulumi.Resource]) -> ServiceSpec:
        files: dict[str, FileContent] = dict(agent.agent_files())
        secrets = {u.name: pulumi.Output.secret(u.password.reveal()) for u in scoped.caches if u.password}
        files[agent.AGENT_CONFIG_PATH] = pulumi.Output.all(**secrets).apply(
            lambda passwords: agent.agent_config(scoped, passwords)
        ) if secrets else agent.agent_config(scoped, {})
        files.update(agent.pins_files(scoped))
        return ServiceSpec(
            role=agent.AGENT_ROLE, image=scoped.agent_image, files=files,
            mounts=[self._volume(role, path, read_only) for role, path, read_only in agent.storage_mounts(scoped)
                    if role != metrics.LOGS_ROLE] + self._log_mounts(scoped, read_only=True),
            command=agent.agent_command(),
            healthcheck=http_healthcheck(f"http://127.0.0.1:{agent.AGENT_PORT}/healthz"),
            depends_on=after,
        )

    def _front(
        self, scoped: Settings, config: pulumi.Input[str], tls_files: dict[str, FileContent],
        after: list[pulumi.Resource],
    ) -> ServiceSpec:
        files: dict[str, FileContent] = {renderers.FRONT_CONFIG_PATH: config, **tls_files}
        command = ["caddy", "run", "--config", renderers.FRONT_CONFIG_PATH]
        ports = [_host_port(443, scoped.https_port)]
        if scoped.tls.is_acme:  # HTTP-01 challenges (a copy forwards them to the orderer)
            ports.append(_host_port(80, scoped.http_port))
        share_role, share = tls_share.role(scoped), self._share
        if share_role:
            assert share is not None, "ACME in swarm mode needs the share material"
            files[tls_share.SHARE_CERT_PATH] = share.cert_pem
        if share_role == tls_share.ORDERER and share is not None:
            files[tls_share.SHARE_KEY_PATH] = pulumi.Output.secret(share.key_pem)
            if scoped.tls.acme_trusted_root_pem:
                files[renderers.FRONT_ACME_ROOT_PATH] = scoped.tls.acme_trusted_root_pem
        if share_role == tls_share.COPY and share is not None:
            files[tls_share.SCRIPT_PATH] = tls_share.copy_start_script(
                scoped, renderers.FRONT_CONFIG_PATH, renderers.FRONT_ADMIN)
            files[tls_share.AUTH_PATH] = pulumi.Output.secret(share.auth_header)
            command = ["sh", tls_share.SCRIPT_PATH]
        if scoped.metrics_port:
            ports.append(_host_port(metrics.METRICS_PORT, scoped.metrics_port))
        storage_views = [
            self._volume(u.role, renderers.front_data_dir(u.role), read_only=True) for u in scoped.caches
        ]
        return ServiceSpec(
            role=naming.FRONT, image=scoped.front_image, files=files,
            mounts=[self._volume(naming.FRONT, renderers.FRONT_DATA_DIR), *storage_views,
                    *self._log_mounts(scoped, read_only=False)],
            command=command,
            healthcheck=http_healthcheck(f"http://{renderers.FRONT_ADMIN}/config/"),
            ports=ports,
            # Containers on the network reach the registries by their public names through a front.
            aliases=list(scoped.hostnames),
            depends_on=after,
        )

    def _log_mounts(self, scoped: Settings, read_only: bool) -> list[docker.ServiceTaskSpecContainerSpecMountArgs]:
        """The front's access log, which the agent reads (metrics endpoint, size cap)."""
        if not scoped.writes_access_log:
            return []
        return [self._volume(metrics.LOGS_ROLE, metrics.LOG_DIR, read_only=read_only)]

    # -- resources ------------------------------------------------------------------------

    def _network(self) -> tuple[pulumi.Input[str], pulumi.Input[str]]:
        """The overlay network's name and id (an existing network's name serves as both)."""
        settings = self._settings
        if settings.external_network:
            return settings.external_network, settings.external_network
        network = docker.Network(
            f"{self._name}-network",
            name=settings.names.network,
            driver="overlay",
            # The verification container (and a client on a node) joins it as a plain container.
            attachable=True,
            labels=[docker.NetworkLabelArgs(label=LABEL_STACK, value=settings.stack)],
            opts=pulumi.ResourceOptions(parent=self._parent),
        )
        return network.name, network.id

    def _volume(
        self, role: str, target: str, read_only: bool = False
    ) -> docker.ServiceTaskSpecContainerSpecMountArgs:
        """The node-local named volume of `role` (the same name on every node, each its own data)."""
        return docker.ServiceTaskSpecContainerSpecMountArgs(
            type="volume", source=self._settings.names.volume(role), target=target, read_only=read_only or None,
        )

    def _add(self, spec: ServiceSpec, node: str = "") -> docker.Service:
        scoped = self._settings.for_node(node) if node else self._settings
        service_name = scoped.names.container(spec.role)
        key = f"{spec.role}-{node}" if node else spec.role
        configs, secrets = self._file_objects(spec, key)
        service = docker.Service(
            f"{self._name}-{key}",
            name=service_name,
            labels=[docker.ServiceLabelArgs(label=LABEL_STACK, value=scoped.stack),
                    docker.ServiceLabelArgs(label=LABEL_ROLE, value=spec.role)],
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=spec.image,
                    hostname=service_name,
                    args=spec.command,
                    env=spec.env or None,
                    mounts=spec.mounts or None,
                    configs=configs or None,
                    secrets=secrets or None,
                    healthcheck=spec.healthcheck,
                ),
                networks_advanceds=[docker.ServiceTaskSpecNetworksAdvancedArgs(
                    id=self._network_id, aliases=[service_name, *spec.aliases])],
                placement=docker.ServiceTaskSpecPlacementArgs(
                    constraints=spec.constraints or ([node_constraint(node)] if node else None)),
                restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(condition="any", delay="5s"),
            ),
            mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=spec.replicas)),
            # No VIPs: IPVS is missing on some kernels, and a node-bound service has one task anyway.
            endpoint_spec=docker.ServiceEndpointSpecArgs(mode="dnsrr", ports=spec.ports or None),
            update_config=docker.ServiceUpdateConfigArgs(
                parallelism=1, delay="2s", order="start-first" if spec.start_first else "stop-first",
                failure_action="rollback", monitor="15s",
            ),
            rollback_config=docker.ServiceRollbackConfigArgs(parallelism=1, order="stop-first", monitor="15s"),
            converge_config=docker.ServiceConvergeConfigArgs(delay="2s", timeout=CONVERGE_TIMEOUT),
            opts=pulumi.ResourceOptions(parent=self._parent, depends_on=spec.depends_on),
        )
        self.services[key] = service
        return service

    def _file_objects(self, spec: ServiceSpec, key: str) -> tuple[list[ConfigMount], list[SecretMount]]:
        configs: list[ConfigMount] = []
        secrets: list[SecretMount] = []
        for index, (path, content) in enumerate(sorted(spec.files.items(), key=lambda item: item[0])):
            logical = f"{self._name}-{key}-file{index}"
            if isinstance(content, str):
                config = self._config_object(logical, key, path, content)
                configs.append(docker.ServiceTaskSpecContainerSpecConfigArgs(
                    config_id=config.id, config_name=config.name, file_name=path))
            else:
                secret = self._secret_object(logical, key, path, content)
                secrets.append(docker.ServiceTaskSpecContainerSpecSecretArgs(
                    secret_id=secret.id, secret_name=secret.name, file_name=path))
        return configs, secrets

    def _file_labels(self, service: str, path: str) -> list[tuple[str, str]]:
        """Which stack, service (`<role>[-<node>]`) and file an object is, for `docker config ls` readers."""
        return [(LABEL_STACK, self._settings.stack), (LABEL_ROLE, service), (LABEL_FILE, path)]

    def _config_object(self, logical: str, service: str, path: str, content: str) -> docker.ServiceConfig:
        return docker.ServiceConfig(
            logical,
            name=file_object_name(self._settings.prefix, service, path, content),
            data=_base64(content),
            labels=[docker.ServiceConfigLabelArgs(label=label, value=value)
                    for label, value in self._file_labels(service, path)],
            opts=pulumi.ResourceOptions(parent=self._parent),
        )

    def _secret_object(self, logical: str, service: str, path: str, content: FileContent) -> docker.Secret:
        text = pulumi.Output.from_input(content)
        prefix = self._settings.prefix
        return docker.Secret(
            logical,
            # The name is a hash of the content: not a secret, though derived from one.
            name=pulumi.Output.unsecret(text.apply(lambda value: file_object_name(prefix, service, path, value))),
            # (Output.secret of an Output: mypy cannot infer the generic through it.)
            data=pulumi.Output.secret(text.apply(_base64)),  # type: ignore[arg-type]
            labels=[docker.SecretLabelArgs(label=label, value=value)
                    for label, value in self._file_labels(service, path)],
            opts=pulumi.ResourceOptions(parent=self._parent),
        )


def _base64(text: str) -> str:
    """Secret and config data as the provider takes it (kreuzwerker: `validateStringIsBase64Encoded`)."""
    return base64.b64encode(text.encode()).decode()


def _host_port(target: int, published: int) -> docker.ServiceEndpointSpecPortArgs:
    """A port on the node the task runs on (no routing mesh: it needs IPVS, and a client should
    reach the node it names)."""
    return docker.ServiceEndpointSpecPortArgs(
        target_port=target, published_port=published, publish_mode="host", protocol="tcp")
