"""RegistryStack: the build registry, the cache registries and their TLS + basic-auth front.

The two switches (`enableBuild`, `enableCache`) pick what exists:

| build | cache | containers                                            |
|-------|-------|-------------------------------------------------------|
| on    | on    | build, a cache + standby per upstream, front           |
| on    | off   | build, front                                          |
| off   | on    | a cache + standby per upstream, front                  |
| off   | off   | none (logged, not an error)                           |

It takes `RegistryStackArgs` (components/args.py): the stack config's keys under their own
names, validated before anything is created. No `from __future__ import annotations`: Pulumi's
component host reads the annotations of `args` and of the outputs at runtime.
"""

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import pulumi
import pulumi_docker as docker
import pulumi_random as random
import pulumi_tls as tls

from . import agent, build_cleanup, client_configs, herd, metrics, naming, prewarm, renderers, tls_share
from .args import RegistryStackArgs, TlsArgs, TlsMode
from .daemon_mirror import DaemonMirror, daemon_mirrors_for
from .secret import Secret
from .settings import Settings, Upstream, credentials_of, settings_from_values, users_of
from .swarm import ShareMaterial, SwarmServices
from .tls import Tls
from .verification import Verification

_LabelArgs = TypeVar("_LabelArgs")

LABEL_STACK = "registry-stack.stack"
LABEL_ROLE = "registry-stack.role"
# The validity of the certificate the ACME copies pin (swarm mode, _share_material).
SHARE_CERT_HOURS = 10 * 365 * 24


class RegistryStack(pulumi.ComponentResource):
    """Everything one stack runs on its Docker host."""

    build_url: pulumi.Output[str]
    """https URL of the build registry (pushes, basic auth); empty without it."""
    cache_url: pulumi.Output[str]
    """https URL of the primary cache (Docker Hub's when cached); empty without a cache."""
    unified_url: pulumi.Output[str]
    """https URL of the unified endpoint; empty unless unifiedEndpoint is set."""
    cache_urls: dict[str, str]
    """https URL of each upstream's cache, by upstream name."""
    ca_cert_pem: pulumi.Output[str | None]
    """The private CA clients must trust (self-signed mode); none in the ACME modes."""
    hostnames: pulumi.Output[list[str]]
    """The registry names the front serves."""
    hosts_line: pulumi.Output[str]
    """An /etc/hosts line mapping the registry names to hostAddress."""
    daemon_json: pulumi.Output[str]
    """The daemon.json keys a Docker host needs to use the Docker Hub cache as its mirror."""
    docker_login: pulumi.Output[str]
    """The `docker login` command for the build registry's first user."""
    podman_registries_conf: pulumi.Output[str]
    """A drop-in for /etc/containers/registries.conf.d/ (podman, CRI-O): every cached upstream mirrored."""
    k3s_registries_yaml: pulumi.Output[str]
    """/etc/rancher/k3s/registries.yaml for k3s and RKE2 nodes: every cached upstream mirrored."""
    buildkitd_toml: pulumi.Output[str]
    """buildkitd.toml registry sections for BuildKit: every cached upstream mirrored."""
    metrics_url: pulumi.Output[str]
    """http URL of the metrics endpoint (docs/metrics.md); empty unless metricsPort is set."""
    prometheus_scrape_config: pulumi.Output[str]
    """Prometheus scrape_configs for the metrics endpoint (JSON, which is YAML); empty without it."""
    prewarm_failures: pulumi.Output[list[str]]
    """The prewarm images this `pulumi up` could not pull into their cache, each "<upstream>=<reference>: <reason>"."""

    def __init__(self, name: str, args: RegistryStackArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        # Every value is checked before anything registers, the component itself included.
        settings = settings_from_values(args, pulumi.get_stack())
        super().__init__("registry-stack:index:RegistryStack", name, {}, opts)
        self._name = name
        self._settings = settings
        self._child = pulumi.ResourceOptions(parent=self)
        self.containers: dict[str, docker.Container] = {}
        self._volumes: dict[str, docker.ContainerVolumeArgs] = {}
        self.tls: Tls | None = None
        self.verification: Verification | None = None
        self.swarm: SwarmServices | None = None
        self.prewarm: prewarm.Prewarm | None = None
        self._images: dict[str, docker.RemoteImage] = {}
        self._salt: random.RandomId | None = None
        self._share: random.RandomPassword | None = None
        # What serves the primary cache in swarm mode (its first node's cache and front).
        self.serving_resources: list[pulumi.Resource] = []

        if not settings.any_registry:
            pulumi.log.info(
                "enableBuild and enableCache are both false: this stack runs no registry "
                "and creates no containers",
                resource=self,
            )
        else:
            self._create_registries_and_front()

        names = settings.names
        build_url = names.url(names.build_hostname) if settings.enable_build else ""
        primary = naming.primary(settings.caches)
        cache_url = names.url(names.cache_hostname(primary.name)) if primary else ""
        unified_url = names.url(names.unified_hostname) if settings.unified_endpoint else ""
        self.build_url = pulumi.Output.from_input(build_url)
        self.cache_url = pulumi.Output.from_input(cache_url)
        self.unified_url = pulumi.Output.from_input(unified_url)
        self.cache_urls = {u.name: names.url(names.cache_hostname(u.name)) for u in settings.caches}
        serving = (naming.cache_role(primary.name), naming.FRONT) if primary else ()
        # What serves the primary cache: a DaemonMirror waits for these. Not a class-level
        # annotation, so the component package's schema does not list it as an output.
        self.primary_cache_resources: tuple[pulumi.Resource, ...] = tuple(
            self.containers[role] for role in serving if role in self.containers
        ) + tuple(self.serving_resources)
        self.ca_cert_pem = pulumi.Output.from_input(self.tls.ca_cert_pem if self.tls else None)
        self.hostnames = pulumi.Output.from_input(list(settings.hostnames))
        self.hosts_line = pulumi.Output.from_input(renderers.hosts_line(settings))
        self.daemon_json = pulumi.Output.from_input(renderers.daemon_json_snippet(settings))
        self.docker_login = (
            settings.deferred["users"].apply(
                lambda value: renderers.docker_login_command(replace(settings, users=users_of(settings, value)))
            )
            if "users" in settings.deferred and settings.enable_build
            else pulumi.Output.from_input(renderers.docker_login_command(settings))
        )
        clients = client_configs.stack_outputs(settings)  # podman/CRI-O, k3s/RKE2, BuildKit
        self.podman_registries_conf = pulumi.Output.from_input(clients["podmanRegistriesConf"])
        self.k3s_registries_yaml = pulumi.Output.from_input(clients["k3sRegistriesYaml"])
        self.buildkitd_toml = pulumi.Output.from_input(clients["buildkitdToml"])
        self.metrics_url = pulumi.Output.from_input(metrics.metrics_url(settings))
        self.prometheus_scrape_config = pulumi.Output.from_input(metrics.scrape_config(settings))
        self.prewarm_failures = self.prewarm.failures if self.prewarm else pulumi.Output.from_input([])
        # One DaemonMirror per mirrorHosts entry, pointed at the primary cache once it serves.
        self.daemon_mirrors: list[DaemonMirror] = daemon_mirrors_for(self, settings, name)
        self.register_outputs({
            "buildUrl": self.build_url,
            "cacheUrl": self.cache_url,
            "cacheUrls": self.cache_urls,
            "unifiedUrl": self.unified_url,
            "caCertPem": self.ca_cert_pem,
            "hostnames": self.hostnames,
            "hostsLine": self.hosts_line,
            "daemonJson": self.daemon_json,
            "dockerLogin": self.docker_login,
            "podmanRegistriesConf": self.podman_registries_conf,
            "k3sRegistriesYaml": self.k3s_registries_yaml,
            "buildkitdToml": self.buildkitd_toml,
            "metricsUrl": self.metrics_url,
            "prometheusScrapeConfig": self.prometheus_scrape_config,
            "prewarmFailures": self.prewarm_failures,
        })

    # -- structure ------------------------------------------------------------------------

    def _create_registries_and_front(self) -> None:
        if self._settings.topology.is_swarm:
            self._create_swarm_services()
            return
        settings = self._settings
        network = self._network_name()
        registry_image = self._image("registry-image", settings.registry_image)
        major = settings.registry_major_version
        if settings.enable_build:
            build_config = build_registry_config(settings)
            self.containers["build"] = self._registry("build", registry_image, network, build_config)
        for upstream in settings.caches:
            config = self._cache_config(upstream, major)
            # No health wait for a cache: it cannot start while its upstream is unreachable, and
            # a missed wait would fail the update before the front exists, then pass the next
            # one (see components/verification.py). Its restart policy brings it up once the
            # upstream answers; the verification fails every `pulumi up` until then.
            self.containers[upstream.role] = self._registry(
                upstream.role, registry_image, network, config, wait=False,
                files=prewarm.cache_files(upstream, major), start=prewarm.cache_command(upstream),
            )
            # Serves what the cache holds, read-only, while the cache itself cannot start
            # (distribution 2.8 in proxy mode exits when its upstream is unreachable).
            self.containers[upstream.standby_role] = self._registry(
                upstream.standby_role, registry_image, network,
                renderers.standby_registry_config(upstream, major), data_of=upstream.role,
            )
            self.containers[naming.herd_role(upstream.name)] = self._herd(upstream, network)
        if settings.caches:
            self.containers[agent.AGENT_ROLE] = self._agent(network)
        self.tls = Tls(f"{self._name}-tls", _tls_args(settings), opts=self._child)
        self.containers["front"] = self._front(network)
        self.verification = Verification(
            self._name, settings, registry_image, network,
            labels=[
                self._label(LABEL_STACK, settings.stack, docker.ContainerLabelArgs),
                self._label(LABEL_ROLE, "verify", docker.ContainerLabelArgs),
            ],
            after=list(self.containers.values()),
            parent=self,
        )
        if settings.prewarm:
            self.prewarm = self._prewarm(network)

    def _prewarm(self, network: pulumi.Input[str]) -> prewarm.Prewarm:
        """The pre-warm run (components/prewarm.py), once the verification saw the stack serve."""
        settings = self._settings
        assert self.verification is not None
        return prewarm.Prewarm(
            self._name, settings, self._image("agent-image", settings.agent_image), network,
            volumes=[self._view(role, f"{prewarm.STORAGE_DIR}/{role}") for role in prewarm.storage_roles(settings)],
            labels=[
                self._label(LABEL_STACK, settings.stack, docker.ContainerLabelArgs),
                self._label(LABEL_ROLE, prewarm.ROLE, docker.ContainerLabelArgs),
            ],
            after=[self.verification.container],
            parent=self,
        )

    def _create_swarm_services(self) -> None:
        """orchestrator=swarm: the same files, as services on the nodes (components/swarm.py)."""
        settings = self._settings
        self.tls = Tls(f"{self._name}-tls", _tls_args(settings), opts=self._child)
        self.swarm = SwarmServices(
            self._name, settings, self,
            front_config=self._front_config,
            cache_config=lambda upstream: self._cache_config(upstream, settings.registry_major_version),
            build_config=build_registry_config(settings, self._build_http_secret()),
            tls_files=self._tls_files(),
            share=self._share_material() if tls_share.is_shared(settings) else None,
        )
        services = self.swarm.services
        primary = naming.primary(settings.caches)
        first = settings.topology.nodes[0]
        self.serving_resources = [
            services[key] for key in (f"{primary.role}-{first}", f"{naming.FRONT}-{first}")
        ] if primary else []
        self.verification = Verification(
            self._name, settings, self._image("registry-image", settings.registry_image), self.swarm.network,
            labels=[
                self._label(LABEL_STACK, settings.stack, docker.ContainerLabelArgs),
                self._label(LABEL_ROLE, "verify", docker.ContainerLabelArgs),
            ],
            after=list(services.values()),
            parent=self,
        )

    def _tls_files(self) -> dict[str, pulumi.Input[str]]:
        """The front's certificate and key (self-signed mode), by their path in the front."""
        assert self.tls is not None
        files: dict[str, pulumi.Input[str]] = {}
        if self.tls.cert_pem is not None and self.tls.private_key_pem is not None:
            files[renderers.FRONT_CERT_PATH] = self.tls.cert_pem
            files[renderers.FRONT_KEY_PATH] = self.tls.private_key_pem
        return files

    def _network_name(self) -> pulumi.Input[str]:
        settings = self._settings
        if settings.external_network:
            return settings.external_network
        network = docker.Network(
            f"{self._name}-network",
            name=settings.names.network,
            driver="bridge",
            labels=[self._label(LABEL_STACK, settings.stack, docker.NetworkLabelArgs)],
            opts=self._child,
        )
        return network.name

    def _image(self, suffix: str, reference: str) -> docker.RemoteImage:
        """The pulled image; containers take its `image_id`, so a new image replaces them.

        keep_locally: destroying the stack must not delete an image other stacks use.
        replace_on_changes=["name"]: a new reference (registryImage, frontImage) replaces the
        RemoteImage, so `pulumi preview` knows its image ID only after the pull and shows every
        container that uses it as replaced (the container's `image` forces a new container,
        kreuzwerker resource_docker_container.go). Updated in place instead, the image would
        keep its old ID in the preview and the containers would look unchanged until `up`
        replaces them (pulumi/pulumi-docker#293).
        """
        if suffix not in self._images:  # one resource per image, however many containers use it
            options = pulumi.ResourceOptions(parent=self, replace_on_changes=["name"])
            self._images[suffix] = docker.RemoteImage(
                f"{self._name}-{suffix}", name=reference, keep_locally=True, opts=options
            )
        return self._images[suffix]

    def _data_volume(self, role: str) -> docker.ContainerVolumeArgs:
        """Named volume by default, or `<dataPath>/<role>_data` on the host; one per role."""
        if role not in self._volumes:
            self._volumes[role] = self._new_data_volume(role)
        return self._volumes[role]

    def _new_data_volume(self, role: str) -> docker.ContainerVolumeArgs:
        settings = self._settings
        container_path = renderers.FRONT_DATA_DIR if role == "front" else renderers.REGISTRY_DATA_DIR
        if settings.data_path:
            return docker.ContainerVolumeArgs(
                host_path=f"{settings.data_path}/{role}_data", container_path=container_path
            )
        volume = docker.Volume(
            f"{self._name}-{role}-data",
            name=settings.names.volume(role),
            labels=[self._label(LABEL_STACK, settings.stack, docker.VolumeLabelArgs)],
            # Images and ACME state outlive container replacement; never replace the volume
            # just because its labels changed. Pushed images and the ACME account also
            # outlive `pulumi destroy` when retainData is set (the cache can refill itself).
            opts=pulumi.ResourceOptions(
                parent=self,
                ignore_changes=["labels"],
                retain_on_delete=settings.retain_data and role in ("build", "front"),
            ),
        )
        return docker.ContainerVolumeArgs(volume_name=volume.name, container_path=container_path)

    # -- containers -----------------------------------------------------------------------

    def _registry(
        self,
        role: str,
        image: docker.RemoteImage,
        network: pulumi.Input[str],
        config: pulumi.Input[str],
        data_of: str = "",
        wait: bool = True,
        files: dict[str, str] | None = None,
        start: tuple[list[str], list[str]] | None = None,
    ) -> docker.Container:
        """A registry; `files` are uploaded beside its config, `start` is (entrypoint, command)."""
        settings = self._settings
        major = settings.registry_major_version
        uploads = [docker.ContainerUploadArgs(file=renderers.registry_config_path(major), content=config)]
        uploads += [docker.ContainerUploadArgs(file=path, content=text) for path, text in (files or {}).items()]
        healthcheck = _http_healthcheck(f"http://127.0.0.1:{renderers.REGISTRY_PORT}/v2/")
        entrypoints, command = start if start else (None, None)
        if role == "build" and settings.cleanup.enabled:
            # registry-stack-cleanup runs the registry and its maintenance windows (build_cleanup.py).
            uploads += build_cleanup.build_uploads(settings)
            healthcheck = _healthcheck(build_cleanup.healthcheck_command())
            entrypoints, command = build_cleanup.entrypoint(), build_cleanup.command()
        return self._container(
            role,
            wait=wait,
            image=image,
            network=network,
            aliases=[settings.names.container(role)],
            uploads=uploads,
            # A build registry in a bucket has no volume.
            volumes=[] if role == "build" and settings.topology.build_storage else [self._data_volume(data_of or role)],
            healthcheck=healthcheck,
            envs=[f"{key}={value}" for key, value in sorted(renderers.registry_environment(major).items())],
            entrypoints=entrypoints,
            command=command,
        )

    def _herd(self, upstream: Upstream, network: pulumi.Input[str]) -> docker.Container:
        """Varnish in front of the cache: one upstream fetch per blob under a herd (components/herd.py)."""
        settings = self._settings
        role = naming.herd_role(upstream.name)
        cache, standby = (settings.names.container(r) for r in (upstream.role, upstream.standby_role))
        return self._container(
            role,
            image=self._image("herd-image", settings.herd_image),
            network=network,
            aliases=[settings.names.container(role)],
            uploads=[
                docker.ContainerUploadArgs(file=herd.HERD_VCL_PATH, content=herd.herd_vcl(
                    cache, standby, renderers.REGISTRY_PORT)),
                docker.ContainerUploadArgs(file=herd.HERD_SCRIPT_PATH, content=herd.herd_start_script(
                    cache, standby)),
            ],
            volumes=[],
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=["CMD", "varnishadm", "-n", herd.HERD_WORKDIR, "ping"],
                interval="10s", timeout="5s", retries=3, start_period="10s",
            ),
            command=["sh", herd.HERD_SCRIPT_PATH],
            # Like the cache's: varnishd starts once the cache's name resolves, which it does not
            # while the cache cannot start (the front uses the standby meanwhile).
            wait=False,
            depends_on=[self.containers[upstream.role], self.containers[upstream.standby_role]],
        )

    def _cache_config(self, upstream: Upstream, major: int) -> pulumi.Input[str]:
        """The proxy config; secret when it carries the upstream's credentials."""
        deferred = self._settings.deferred.get("upstreamCredentials")
        if deferred is not None:
            settings = self._settings

            def render(value: Any) -> str:
                credentials = credentials_of(settings, value).get(upstream.name)
                proxy = renderers.ProxyCredentials(*credentials) if credentials else None
                return renderers.cache_registry_config(upstream, major, proxy)

            return deferred.apply(render)  # secret: the Output is
        if upstream.password is None:
            return renderers.cache_registry_config(upstream, major)
        return _secret(upstream.password).apply(
            lambda password: renderers.cache_registry_config(
                upstream, major, renderers.ProxyCredentials(upstream.username, password)
            )
        )

    def _agent(self, network: pulumi.Input[str]) -> docker.Container:
        """The agent (components/agent.py): explains what the caches cannot serve, counts what they do."""
        settings = self._settings
        files = [docker.ContainerUploadArgs(file=path, content=text) for path, text in agent.agent_files().items()]
        secrets = {u.name: _secret(u.password) for u in settings.caches if u.password is not None}
        # With upstream credentials in it, the config is a secret.
        config: pulumi.Input[str] = pulumi.Output.all(**secrets).apply(
            lambda passwords: agent.agent_config(settings, passwords)
        ) if secrets else agent.agent_config(settings, {})
        files.append(docker.ContainerUploadArgs(file=agent.AGENT_CONFIG_PATH, content=config))
        # What eviction never removes, one file per capped cache.
        pins = agent.pins_files(settings)
        files += [docker.ContainerUploadArgs(file=path, content=text) for path, text in pins.items()]
        return self._container(
            agent.AGENT_ROLE,
            image=self._image("agent-image", settings.agent_image),
            network=network,
            aliases=[settings.names.container(agent.AGENT_ROLE)],
            uploads=files,
            volumes=[self._view(role, path, read_only) for role, path, read_only in agent.storage_mounts(settings)],
            healthcheck=_http_healthcheck(f"http://127.0.0.1:{agent.AGENT_PORT}/healthz"),
            command=agent.agent_command(),
        )

    def _view(self, role: str, container_path: str, read_only: bool = True) -> docker.ContainerVolumeArgs:
        """The data volume of `role` (created once), mounted at another path, read-only by default."""
        volume = self._data_volume(role)
        return docker.ContainerVolumeArgs(
            volume_name=volume.volume_name, host_path=volume.host_path,
            container_path=container_path, read_only=read_only or None,
        )

    def _front(self, network: pulumi.Input[str]) -> docker.Container:
        settings = self._settings
        assert self.tls is not None
        image = self._image("front-image", settings.front_image)
        uploads = [docker.ContainerUploadArgs(file=renderers.FRONT_CONFIG_PATH, content=self._front_config(settings))]
        uploads += [docker.ContainerUploadArgs(file=path, content=text) for path, text in self._tls_files().items()]
        if settings.tls.acme_trusted_root_pem:
            root = settings.tls.acme_trusted_root_pem
            uploads.append(docker.ContainerUploadArgs(file=renderers.FRONT_ACME_ROOT_PATH, content=root))
        ports = [docker.ContainerPortArgs(internal=443, external=settings.https_port, ip=settings.bind_address)]
        if settings.tls.is_acme:
            ports.append(docker.ContainerPortArgs(internal=80, external=settings.http_port, ip=settings.bind_address))
        volumes = [self._data_volume("front"), *self._registry_storage_views()]
        if settings.metrics_port:  # the metrics listener
            ports.append(docker.ContainerPortArgs(
                internal=metrics.METRICS_PORT, external=settings.metrics_port, ip=settings.bind_address))
        if settings.writes_access_log:  # the access log the agent reads
            volumes.append(self._view(metrics.LOGS_ROLE, metrics.LOG_DIR, read_only=False))
        depends = [c for role, c in self.containers.items() if role != "front"]
        return self._container(
            "front",
            image=image,
            network=network,
            # Containers on the network (an ACME server validating a challenge, say) reach
            # the registries by their public names through the front.
            aliases=[settings.names.container(naming.FRONT), *settings.hostnames],
            uploads=uploads,
            volumes=volumes,
            healthcheck=_http_healthcheck(f"http://{renderers.FRONT_ADMIN}/config/"),
            command=["caddy", "run", "--config", renderers.FRONT_CONFIG_PATH],
            ports=ports,
            depends_on=depends,
        )

    def _registry_storage_views(self) -> list[docker.ContainerVolumeArgs]:
        """The build's and each cache's storage, read-only in the front: it sends stored blobs
        itself (renderers._stored_blob_route). The same volumes, so nothing is stored twice."""
        settings = self._settings
        roles = (["build"] if settings.enable_build and settings.front_sees_build_storage else []) + [
            u.role for u in settings.caches
        ]
        return [
            docker.ContainerVolumeArgs(
                volume_name=volume.volume_name, host_path=volume.host_path,
                container_path=renderers.front_data_dir(role), read_only=True,
            )
            for role, volume in ((role, self._data_volume(role)) for role in roles)
        ]

    def _front_config(self, settings: Settings) -> pulumi.Input[str]:
        """caddy.json of the front that `settings` describe (the stack's, or one swarm node's)."""
        orders_for_others = tls_share.role(settings) == tls_share.ORDERER
        if not settings.enable_build and not orders_for_others:
            return renderers.front_config(settings, [])
        seed = self._auth_salt()
        users = self._hashed_users(settings, seed.hex) if settings.enable_build else pulumi.Output.from_input([])
        share_hash = pulumi.Output.all(seed.hex, self._share_token()).apply(
            lambda values: renderers.bcrypt_hash(values[1], values[0], tls_share.SHARE_USER)
        ) if orders_for_others else pulumi.Output.from_input("")
        # The hashes are of secrets: the config made of them stays a secret.
        return pulumi.Output.secret(pulumi.Output.all(users, share_hash).apply(
            lambda values: renderers.front_config(settings, values[0], share_token_hash=values[1])
        ))

    def _hashed_users(self, settings: Settings, seed: pulumi.Output[str]) -> pulumi.Output[list[tuple[str, str]]]:
        """(name, bcrypt hash) of every user, salted from the stack's seed (stable across runs)."""
        if "users" in settings.deferred:
            # Passed as an Output (a secret from another language): checked when known.
            return pulumi.Output.all(seed, settings.deferred["users"]).apply(lambda values: [
                (name, renderers.bcrypt_hash(password.reveal(), values[0], name))
                for name, password in users_of(settings, values[1])
            ])
        passwords = [_secret(password) for _, password in settings.users]
        return pulumi.Output.all(seed, *passwords).apply(lambda values: [
            (name, renderers.bcrypt_hash(password, values[0], name))
            for (name, _), password in zip(settings.users, values[1:], strict=True)
        ])

    def _share_material(self) -> ShareMaterial:
        """The token and the share listener's own certificate (components/tls_share.py).

        The copies pin this certificate as their only root, so it needs no CA; ten years, as
        nothing renews a pin (`pulumi up --replace` on it makes a new one).
        """
        settings = self._settings
        key = tls.PrivateKey(f"{self._name}-tls-share-key", algorithm="ECDSA", ecdsa_curve="P256", opts=self._child)
        cert = tls.SelfSignedCert(
            f"{self._name}-tls-share-cert",
            private_key_pem=key.private_key_pem,
            is_ca_certificate=False,
            validity_period_hours=SHARE_CERT_HOURS,
            allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
            dns_names=[tls_share.orderer_front(settings)],
            subject=tls.SelfSignedCertSubjectArgs(common_name=tls_share.orderer_front(settings),
                                                  organization="registry-stack"),
            opts=self._child,
        )
        return ShareMaterial(
            auth_header=self._share_token().apply(tls_share.auth_header),
            cert_pem=cert.cert_pem,
            key_pem=key.private_key_pem,
        )

    def _share_token(self) -> pulumi.Output[str]:
        """The token the fronts of a swarm with ACME lend certificates with (components/tls_share.py)."""
        if self._share is None:
            self._share = random.RandomPassword(
                f"{self._name}-tls-share-token", length=40, special=False, opts=self._child)
        return pulumi.Output.secret(self._share.result)

    def _build_http_secret(self) -> pulumi.Output[str]:
        """One http.secret for every build replica (renderers.registry_config), kept in state."""
        secret = random.RandomId(f"{self._name}-build-http-secret", byte_length=32, opts=self._child)
        return pulumi.Output.secret(secret.b64_std)

    def _auth_salt(self) -> random.RandomId:
        """A per-stack seed kept in state makes the bcrypt salts stable across runs (one for every front)."""
        if self._salt is None:
            self._salt = random.RandomId(f"{self._name}-auth-salt", byte_length=16, opts=self._child)
        return self._salt

    def _container(
        self,
        role: str,
        *,
        image: docker.RemoteImage,
        network: pulumi.Input[str],
        aliases: list[str],
        uploads: list[docker.ContainerUploadArgs],
        volumes: list[docker.ContainerVolumeArgs],
        healthcheck: docker.ContainerHealthcheckArgs,
        command: list[str] | None = None,
        entrypoints: list[str] | None = None,
        ports: list[docker.ContainerPortArgs] | None = None,
        depends_on: Sequence[pulumi.Resource] | None = None,
        envs: list[str] | None = None,
        wait: bool = True,
    ) -> docker.Container:
        settings = self._settings
        name = settings.names.container(role)
        return docker.Container(
            f"{self._name}-{role}",
            name=name,
            hostname=name,
            image=image.image_id,
            restart="unless-stopped",
            must_run=True,
            wait=wait,
            wait_timeout=120 if wait else None,
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network, aliases=aliases)],
            uploads=uploads,
            volumes=volumes,
            healthcheck=healthcheck,
            command=command,
            entrypoints=entrypoints,
            envs=envs or None,
            ports=ports,
            labels=[
                self._label(LABEL_STACK, settings.stack, docker.ContainerLabelArgs),
                self._label(LABEL_ROLE, role, docker.ContainerLabelArgs),
            ],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=depends_on or [],
                # The container name is fixed, so the old one must go before the new one
                # starts; a changed health check must reach the running container.
                delete_before_replace=True,
                replace_on_changes=["healthcheck"],
            ),
        )

    @staticmethod
    def _label(label: str, value: str, args_type: Callable[..., _LabelArgs]) -> _LabelArgs:
        return args_type(label=label, value=value)


def build_registry_config(
    settings: Settings, http_secret: pulumi.Output[str] | None = None
) -> pulumi.Input[str]:
    """The build registry's config.yml; a secret when it carries the bucket's secret key or the
    replicas' shared `http_secret` (swarm mode)."""
    major = settings.registry_major_version
    storage = settings.topology.build_storage
    if settings.cleanup.enabled:  # a volume (settings refuse a bucket): the window stops the writer
        return renderers.registry_config("build", major, drain_timeout=build_cleanup.DRAIN_TIMEOUT)
    if (storage is None or storage.secret_key is None) and http_secret is None:
        return renderers.registry_config("build", major, storage=storage)
    storage_secret = _secret(storage.secret_key) if storage and storage.secret_key else pulumi.Output.from_input("")
    return pulumi.Output.all(storage_secret, http_secret or "").apply(
        lambda secrets: renderers.registry_config(
            "build", major, storage=storage, storage_secret_key=secrets[0], http_secret=secrets[1]
        )
    )


def _tls_args(settings: Settings) -> TlsArgs:
    return TlsArgs(
        hostnames=list(settings.hostnames),
        caCommonName=f"registry-stack {settings.stack} CA",
        tlsMode=TlsMode(settings.tls.mode),
        certValidityDays=settings.tls.cert_validity_days,
        certEarlyRenewalDays=settings.tls.cert_early_renewal_days,
    )


def _secret(value: Secret) -> pulumi.Output[str]:
    return pulumi.Output.secret(value.reveal())


def _http_healthcheck(url: str) -> docker.ContainerHealthcheckArgs:
    # busybox wget is in the official registry and caddy images (both Alpine based).
    return _healthcheck(["CMD", "wget", "-q", "-O", "/dev/null", url])


def _healthcheck(tests: list[str]) -> docker.ContainerHealthcheckArgs:
    return docker.ContainerHealthcheckArgs(tests=tests, interval="10s", timeout="5s", retries=3, start_period="10s")
