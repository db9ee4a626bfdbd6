"""Realize what the program declares on a real Docker engine.

`RealizingMocks` is a Pulumi mocks provider that, instead of inventing outputs, creates
each declared resource for real, in the order the program's dependencies impose:

- docker Network / Volume / RemoteImage / Container through the Docker SDK for Python;
- tls PrivateKey / SelfSignedCert / CertRequest / LocallySignedCert with `cryptography`
  (what pulumi-tls would compute), so the front gets a real CA and leaf;
- random RandomId with os.urandom, RandomPassword with `secrets`.

Every input property must be handled: an unknown resource type or property raises, so a
new thing the program declares cannot be silently dropped from the e2e proof.
`Realized.teardown()` removes everything created, newest first.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import io
import os
import secrets
import string
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import docker
import pulumi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.harness import unwrap

COMPONENT_PREFIX = "registry-stack:index:"


class UnhandledPropertyError(AssertionError):
    """The program declared something this realizer does not know how to create."""


@dataclass
class Realized:
    """What was created, for teardown and for tests to inspect."""

    client: docker.DockerClient
    containers: dict[str, Any] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    created: list[tuple[str, str]] = field(default_factory=list)
    # Run-to-completion containers (attach): name -> (exit code, output) of their last run.
    runs: dict[str, tuple[int, str]] = field(default_factory=dict)

    def teardown(self, keep_volumes: bool = False) -> None:
        for kind, name in reversed(self.created):
            try:
                if kind == "container":
                    self.client.containers.get(name).remove(force=True)
                elif kind == "service":  # swarm kinds (testbed/realize_swarm.py), by id
                    self.client.services.get(name).remove()
                elif kind in ("secret", "config"):
                    getattr(self.client, f"{kind}s").get(name).remove()
                elif kind == "volume" and not keep_volumes:
                    self.client.volumes.get(name).remove(force=True)
                elif kind == "network":
                    self.client.networks.get(name).remove()
            except docker.errors.APIError:  # NotFound included; the rest is retried by callers
                pass


def _take(props: dict[str, Any], handled: set[str], type_token: str) -> dict[str, Any]:
    """Fail loudly on any declared property this realizer would otherwise ignore."""
    unknown = sorted(set(props) - handled)
    if unknown:
        raise UnhandledPropertyError(f"{type_token}: the e2e realizer does not handle {unknown}")
    return props


class RealizingMocks(pulumi.runtime.Mocks):
    def __init__(
        self,
        client: docker.DockerClient,
        on_network: Callable[[str], None] | None = None,
        before_container: Callable[[str, dict[str, Any]], None] | None = None,
        update: bool = False,
        after_start: Callable[[str, Any], None] | None = None,
        wait_timeout_cap: float | None = None,
    ) -> None:
        """`update=True` plays a `pulumi up` over an existing deployment: networks and
        volumes that exist are kept, containers are replaced (deleted before created).
        `after_start(name, container)` runs right after a container starts (a test may make
        it miss its health wait); `wait_timeout_cap` shortens the declared wait_timeout."""
        self.update = update
        self.after_start = after_start
        self.wait_timeout_cap = wait_timeout_cap
        self.client = client
        self.realized = Realized(client)
        self.on_network = on_network
        self.before_container = before_container
        self.errors: list[BaseException] = []

    # -- dispatch -------------------------------------------------------------------------

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        props = unwrap(args.inputs)
        if is_component(args.typ):
            return args.name, props  # components only group their children
        handler = self._HANDLERS.get(args.typ)
        try:
            if handler is None:
                raise UnhandledPropertyError(f"the e2e realizer does not handle resource type {args.typ}")
            return handler(self, args.name, props)
        except BaseException as error:
            # The runtime may swallow an exception raised here; keep it for the caller.
            self.errors.append(error)
            raise

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list | None]:
        raise UnhandledPropertyError(f"the e2e realizer does not handle invoke {args.token}")

    # -- random ---------------------------------------------------------------------------

    def _random_id(self, name: str, props: dict[str, Any]) -> tuple[str, dict]:
        _take(props, {"byteLength"}, "RandomId")
        data = os.urandom(int(props["byteLength"]))
        return data.hex(), {**props, "hex": data.hex(), "b64Std": base64.b64encode(data).decode()}

    def _random_password(self, name: str, props: dict[str, Any]) -> tuple[str, dict]:
        """terraform-provider-random's random_password: `length` characters drawn with crypto/rand
        from upper, lower and numeric (and special unless `special` is false), as `result`."""
        _take(props, {"length", "special"}, "RandomPassword")
        special = "" if props.get("special") is False else "!@#$%&*()-_=+[]{}<>:?"
        alphabet = string.ascii_letters + string.digits + special
        result = "".join(secrets.choice(alphabet) for _ in range(int(props["length"])))
        return "none", {**props, "result": result}

    # -- tls ------------------------------------------------------------------------------

    def _private_key(self, name: str, props: dict[str, Any]) -> tuple[str, dict]:
        _take(props, {"algorithm", "ecdsaCurve"}, "PrivateKey")
        if props["algorithm"] != "ECDSA" or props["ecdsaCurve"] != "P256":
            raise UnhandledPropertyError(f"PrivateKey {props}: only ECDSA P256 is realized")
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode()
        return name, {**props, "privateKeyPem": pem}

    def _self_signed(self, name: str, props: dict[str, Any]) -> tuple[str, dict]:
        handled = {"privateKeyPem", "isCaCertificate", "validityPeriodHours", "allowedUses", "subject", "dnsNames"}
        _take(props, handled, "SelfSignedCert")
        key = _load_key(props["privateKeyPem"])
        subject = _name(props["subject"])
        builder = _certificate_builder(subject, subject, key.public_key(), props)
        if props.get("dnsNames"):  # terraform-provider-tls: dns_names become the SAN extension
            names = [x509.DNSName(name) for name in props["dnsNames"]]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(key, hashes.SHA256())
        return name, {**props, "certPem": cert.public_bytes(serialization.Encoding.PEM).decode()}

    def _cert_request(self, name: str, props: dict[str, Any]) -> tuple[str, dict]:
        _take(props, {"privateKeyPem", "dnsNames", "subject"}, "CertRequest")
        key = _load_key(props["privateKeyPem"])
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(_name(props["subject"]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in props["dnsNames"]]), critical=False)
            .sign(key, hashes.SHA256())
        )
        return name, {**props, "certRequestPem": csr.public_bytes(serialization.Encoding.PEM).decode()}

    def _locally_signed(self, name: str, props: dict[str, Any]) -> tuple[str, dict]:
        _take(
            props,
            {
                "certRequestPem", "caPrivateKeyPem", "caCertPem",
                "validityPeriodHours", "earlyRenewalHours", "allowedUses",
            },
            "LocallySignedCert",
        )
        csr = x509.load_pem_x509_csr(props["certRequestPem"].encode())
        ca_cert = x509.load_pem_x509_certificate(props["caCertPem"].encode())
        ca_key = _load_key(props["caPrivateKeyPem"])
        builder = _certificate_builder(csr.subject, ca_cert.subject, csr.public_key(), props)
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        builder = builder.add_extension(san, critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return name, {**props, "certPem": cert.public_bytes(serialization.Encoding.PEM).decode()}

    # -- docker ---------------------------------------------------------------------------

    def _network(self, name: str, props: dict[str, Any]) -> tuple[str, dict]:
        _take(props, {"name", "driver", "labels", "attachable"}, "Network")
        existing = self.client.networks.list(names=[props["name"]])
        if self.update and existing:
            return existing[0].id, props
        network = self.client.networks.create(
            props["name"], driver=props["driver"], labels=_labels(props), attachable=props.get("attachable"))
        self.realized.created.append(("network", props["name"]))
        self.realized.networks.append(props["name"])
        if self.on_network:
            self.on_network(props["name"])
        return network.id, props

    def _volume(self, name: str, props: dict[str, Any]) -> tuple[str, dict]:
        _take(props, {"name", "labels"}, "Volume")
        if self.update:
            with contextlib.suppress(docker.errors.NotFound):
                return self.client.volumes.get(props["name"]).id, props
        volume = self.client.volumes.create(props["name"], labels=_labels(props))
        self.realized.created.append(("volume", props["name"]))
        self.realized.volumes.append(props["name"])
        return volume.id, props

    def _remote_image(self, name: str, props: dict[str, Any]) -> tuple[str, dict]:
        _take(props, {"name", "keepLocally"}, "RemoteImage")
        # Nothing can be pulled here: the e2e stack config names locally built images.
        image = self.client.images.get(props["name"])
        return image.id, {**props, "imageId": image.id, "repoDigest": ""}

    def _container(self, name: str, props: dict[str, Any]) -> tuple[str, dict]:
        _take(
            props,
            {
                "name", "hostname", "image", "restart", "mustRun", "wait", "waitTimeout", "networksAdvanced",
                "uploads", "volumes", "healthcheck", "command", "ports", "labels", "envs",
                "entrypoints", "attach", "logs",
            },
            "Container",
        )
        if self.before_container:
            self.before_container(props["name"], props)
        if self.update:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.containers.get(props["name"]).remove(force=True)
        networks = props["networksAdvanced"]
        first, *others = networks
        _take(first, {"name", "aliases"}, "Container.networksAdvanced")
        create_kwargs: dict[str, Any] = {
            "name": props["name"],
            "hostname": props.get("hostname"),
            "labels": _labels(props),
            "restart_policy": {"Name": props.get("restart", "no")},
            "healthcheck": _healthcheck(props.get("healthcheck")),
            "volumes": _volumes(props.get("volumes", [])),
            "ports": _ports(props.get("ports", [])),
            # Aliases must exist before start: an ACME server resolves them at once.
            "networking_config": {first["name"]: {"Aliases": first.get("aliases", [])}},
            "network": first["name"],
            "detach": True,
        }
        if props.get("command"):
            create_kwargs["command"] = props["command"]
        if props.get("entrypoints"):
            create_kwargs["entrypoint"] = props["entrypoints"]
        if props.get("envs"):
            # pulumi-docker's `envs` are "KEY=value" strings, as the Docker API's Env list.
            create_kwargs["environment"] = list(props["envs"])
        container = self.client.containers.create(props["image"], **_without_none(create_kwargs))
        self.realized.created.append(("container", props["name"]))
        for extra in others:
            _take(extra, {"name", "aliases"}, "Container.networksAdvanced")
            self.client.networks.get(extra["name"]).connect(container, aliases=extra.get("aliases", []))
        for upload in props.get("uploads", []):
            _upload(container, upload)
        # kreuzwerker starts every container (`start` defaults to true); `must_run` only
        # decides what its Read accepts afterwards.
        container.start()
        if self.after_start:
            self.after_start(props["name"], container)
        if props.get("attach"):
            return container.id, {**props, **_run_to_completion(container, self.realized)}
        if props.get("wait"):
            timeout = float(props.get("waitTimeout", 60))
            _wait_healthy(container, min(timeout, self.wait_timeout_cap) if self.wait_timeout_cap else timeout)
        self.realized.containers[props["name"]] = container
        return container.id, props

    _HANDLERS: ClassVar[dict[str, Callable[[RealizingMocks, str, dict[str, Any]], tuple[str, dict]]]] = {}


RealizingMocks._HANDLERS = {
    "random:index/randomId:RandomId": RealizingMocks._random_id,
    "random:index/randomPassword:RandomPassword": RealizingMocks._random_password,
    "tls:index/privateKey:PrivateKey": RealizingMocks._private_key,
    "tls:index/selfSignedCert:SelfSignedCert": RealizingMocks._self_signed,
    "tls:index/certRequest:CertRequest": RealizingMocks._cert_request,
    "tls:index/locallySignedCert:LocallySignedCert": RealizingMocks._locally_signed,
    "docker:index/network:Network": RealizingMocks._network,
    "docker:index/volume:Volume": RealizingMocks._volume,
    "docker:index/remoteImage:RemoteImage": RealizingMocks._remote_image,
    "docker:index/container:Container": RealizingMocks._container,
}


def is_component(type_token: str) -> bool:
    return type_token.startswith(COMPONENT_PREFIX)


# -- helpers ------------------------------------------------------------------------------


def _load_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _name(subject: dict[str, Any] | None) -> x509.Name:
    subject = subject or {}
    _take(subject, {"commonName", "organization"}, "subject")
    attributes = []
    if subject.get("commonName"):
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, subject["commonName"]))
    if subject.get("organization"):
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject["organization"]))
    return x509.Name(attributes)


def _certificate_builder(subject: x509.Name, issuer: x509.Name, public_key: Any, props: dict[str, Any]):
    now = datetime.datetime.now(datetime.UTC)
    uses = set(props.get("allowedUses", []))
    known = {"cert_signing", "crl_signing", "digital_signature", "key_encipherment", "server_auth"}
    if uses - known:
        raise UnhandledPropertyError(f"allowedUses {sorted(uses - known)}")
    is_ca = bool(props.get("isCaCertificate"))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=float(props["validityPeriodHours"])))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature="digital_signature" in uses,
                content_commitment=False,
                key_encipherment="key_encipherment" in uses,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign="cert_signing" in uses,
                crl_sign="crl_signing" in uses,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if "server_auth" in uses:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder


def _labels(props: dict[str, Any]) -> dict[str, str]:
    return {item["label"]: item["value"] for item in props.get("labels", [])}


def _healthcheck(check: dict[str, Any] | None) -> dict[str, Any] | None:
    if not check:
        return None
    _take(check, {"tests", "interval", "timeout", "retries", "startPeriod"}, "Container.healthcheck")
    return {
        "test": check["tests"],
        "interval": _nanoseconds(check.get("interval", "30s")),
        "timeout": _nanoseconds(check.get("timeout", "30s")),
        "retries": int(check.get("retries", 3)),
        "start_period": _nanoseconds(check.get("startPeriod", "0s")),
    }


def _nanoseconds(duration: str) -> int:
    units = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
    for suffix in ("ms", "s", "m", "h"):
        if duration.endswith(suffix):
            return int(float(duration[: -len(suffix)]) * units[suffix])
    raise UnhandledPropertyError(f"duration {duration!r}")


def _volumes(volumes: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    binds: dict[str, dict[str, str]] = {}
    for volume in volumes:
        _take(volume, {"volumeName", "hostPath", "containerPath", "readOnly"}, "Container.volumes")
        source = volume.get("volumeName") or volume.get("hostPath")
        if not source:
            raise UnhandledPropertyError(f"volume without a source: {volume}")
        binds[source] = {"bind": volume["containerPath"], "mode": "ro" if volume.get("readOnly") else "rw"}
    return binds


def _ports(ports: list[dict[str, Any]]) -> dict[str, tuple[str, int]]:
    published: dict[str, tuple[str, int]] = {}
    for port in ports:
        _take(port, {"internal", "external", "ip", "protocol"}, "Container.ports")
        key = f"{int(port['internal'])}/{port.get('protocol', 'tcp')}"
        published[key] = (port.get("ip", "0.0.0.0"), int(port["external"]))
    return published


def _upload(container: Any, upload: dict[str, Any]) -> None:
    _take(upload, {"file", "content", "executable"}, "Container.uploads")
    path = upload["file"]
    data = upload["content"].encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size = len(data)
        info.mode = 0o755 if upload.get("executable") else 0o644
        archive.addfile(info, io.BytesIO(data))
    container.put_archive("/", buffer.getvalue())


class MissedWaitError(AssertionError):
    """The container did not become healthy within wait_timeout. As with kreuzwerker's
    provider, the container exists and has its ID: the engine keeps it as created-with-errors."""

    def __init__(self, container_id: str, message: str) -> None:
        super().__init__(message)
        self.container_id = container_id


def _wait_healthy(container: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        health = container.attrs["State"].get("Health", {}).get("Status")
        if health == "healthy":
            return
        if container.status == "exited":
            break
        time.sleep(0.5)
    logs = container.logs(tail=40).decode(errors="replace")
    raise MissedWaitError(
        container.id,
        f"container {container.name} ({container.id[:12]}) failed to be in healthy state "
        f"({container.status}):\n{logs}",
    )


RUN_TO_COMPLETION_SECONDS = 600


def _run_to_completion(container: Any, realized: Realized) -> dict[str, Any]:
    """`attach=True`: kreuzwerker waits for the container to stop (`ContainerWait` with
    `WaitConditionNotRunning`), keeps its output as `container_logs` (`logs=True`) and its
    status as `exit_code`; a non-zero status is not an error of the provider."""
    try:
        outcome = container.wait(timeout=RUN_TO_COMPLETION_SECONDS)
    except Exception as error:  # the provider would wait forever: a test must not
        raise AssertionError(f"{container.name} still runs after {RUN_TO_COMPLETION_SECONDS} s") from error
    logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
    realized.runs[container.name] = (int(outcome["StatusCode"]), logs)
    return {"exitCode": int(outcome["StatusCode"]), "containerLogs": logs}


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# -- `pulumi up` after `pulumi up`: the engine's state between runs --------------------------


@dataclass
class ResourceState:
    """What the engine keeps of one resource: its ID, inputs and outputs, and the init errors
    of a resource created with errors."""

    id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    init_errors: list[str] = field(default_factory=list)


@dataclass
class EngineState:
    """The state of one stack across played `pulumi up`s, and the steps the last one took."""

    resources: dict[tuple[str, str], ResourceState] = field(default_factory=dict)
    steps: list[tuple[str, str]] = field(default_factory=list)

    def step_of(self, name: str) -> str | None:
        return next((step for step, resource in self.steps if resource == name), None)

    def named(self, name: str) -> ResourceState | None:
        return next((state for (_, resource), state in self.resources.items() if resource == name), None)


class StatefulMocks(RealizingMocks):
    """Plays one `pulumi up` against the state the earlier ones left, as the engine does:

    - no earlier state: create. A container that misses its health `wait` has been created
      and has its ID (kreuzwerker `resourceDockerContainerCreate` sets the ID before it
      waits), so the engine saves it as created-with-errors (a partial failure: inputs, ID
      and `initErrors`), and the update fails.
    - same inputs: nothing runs, the old outputs stand; but a resource with init errors
      gets an *empty update* (pulumi/pulumi `pkg/resource/deploy/step_generator.go`,
      `continueStepsFromDiff`: "If resource was unchanged, but there were initialization
      errors, generate an empty update step"; pulumi/pulumi#21458). kreuzwerker's
      `resourceDockerContainerUpdate` only changes the restart policy and resource limits
      and never waits: the update succeeds and the init errors are gone, healthy or not.
      (`applyReplaceOnChanges` would replace it instead when its replaceOnChanges held
      `*` or `#initerror`; the program's containers list only `healthcheck`.)
    - other inputs: a container is replaced, the old one deleted first (delete_before_replace,
      as the program declares for every container). Other types do not change between the
      runs these tests play; a change there raises.
    """

    def __init__(self, client: docker.DockerClient, state: EngineState, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.state = state

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        if is_component(args.typ):
            return super().new_resource(args)
        key, props = (args.typ, args.name), unwrap(args.inputs)
        previous = self.state.resources.get(key)
        if previous is not None and previous.inputs == props:
            self.state.steps.append(("update" if previous.init_errors else "same", args.name))
            previous.init_errors = []
            return previous.id, previous.outputs
        step = "create"
        if previous is not None:
            if args.typ != "docker:index/container:Container":
                error = UnhandledPropertyError(f"{args.name}: the stand-in replaces containers only")
                self.errors.append(error)
                raise error
            with contextlib.suppress(docker.errors.NotFound):
                self.client.containers.get(previous.inputs["name"]).remove(force=True)
            step = "replace"
        try:
            resource_id, outputs = super().new_resource(args)
        except MissedWaitError as missed:
            self.state.resources[key] = ResourceState(missed.container_id, props, props, [str(missed)])
            self.state.steps.append(("create-failed", args.name))
            raise
        self.state.resources[key] = ResourceState(resource_id, props, outputs)
        self.state.steps.append((step, args.name))
        return resource_id, outputs


def play_up(
    client: docker.DockerClient,
    state: EngineState,
    values: dict[str, Any],
    secret_keys: tuple[str, ...],
    stack: str,
    **mock_options: Any,
) -> tuple[Any, BaseException | None, StatefulMocks]:
    """One `pulumi up` against `state`: (declaration or None, the error it ended with, mocks).

    A `pulumi up` runs the program in a new process, so the verification gets a new run id
    (components/verification.py RUN_ID) here too. Nothing is torn down on failure: what
    was created stays, as it does for real.
    """
    import uuid

    from components import verification
    from tests.harness import declare

    verification.RUN_ID = uuid.uuid4().hex
    state.steps = []
    mocks = StatefulMocks(client, state, **mock_options)
    try:
        declaration = declare(values, secret_keys=secret_keys, stack=stack, mocks=mocks)
    except BaseException as error:
        # A provider's error first (it is what the engine reports), else the program's own.
        return None, (mocks.errors[0] if mocks.errors else error), mocks
    return declaration, (mocks.errors[0] if mocks.errors else None), mocks
