"""Realize a swarm-mode stack: docker Service, Secret and ServiceConfig on a real swarm manager.

`SwarmMocks` extends the realizer (testbed/realize.py, same rule: a declared property it does
not handle fails the run) with the swarm types, and plays `pulumi up` after `pulumi up`
against an `EngineState` as the engine and pulumi-docker (kreuzwerker's provider) would:

- a **Service** whose inputs changed is updated in place (kreuzwerker `resourceDockerServiceUpdate`
  sends the new spec with the service's version), and with `converge_config` the update waits as
  the provider does: until the update completed and every task runs (the provider "imitates the
  docker cli to guarantee that all tasks of a service are running or successfully updated",
  its docs for docker_service). Swarm reports a task with a health check as running only once
  it is healthy, so "running" includes the health check. Its first look comes after a delay
  (resource_docker_service_funcs.go: the create's StateChangeConf has `Delay:
  convergeConfig.delay`, the update's a fixed `Delay: 7 * time.Second`): a look right after
  the update call would find the old task still running and call the update done;
- a **Secret** or **ServiceConfig** is immutable (kreuzwerker: `name` and `data` ForceNew): new
  inputs make a new object, created before the services move to it, and the old one is deleted
  at the end of the update (Pulumi's default create-before-delete), `finish()`;
- an overlay **Network** that exists is kept; the verification **Container** is replaced.

Secret and config `data` arrive base64-encoded (kreuzwerker `validateStringIsBase64Encoded`).
"""

from __future__ import annotations

import base64
import contextlib
import time
from typing import Any

import docker
import pulumi
from docker import types as dt

from testbed.realize import (
    EngineState,
    RealizingMocks,
    ResourceState,
    UnhandledPropertyError,
    _labels,
    _nanoseconds,
    _take,
    is_component,
)
from tests.harness import unwrap

SERVICE = "docker:index/service:Service"
SECRET = "docker:index/secret:Secret"
CONFIG = "docker:index/serviceConfig:ServiceConfig"
CONTAINER = "docker:index/container:Container"
NETWORK = "docker:index/network:Network"

SERVICE_PROPS = {"name", "labels", "taskSpec", "mode", "endpointSpec", "updateConfig", "rollbackConfig",
                 "convergeConfig"}
TASK_PROPS = {"containerSpec", "networksAdvanceds", "placement", "restartPolicy"}
CONTAINER_SPEC_PROPS = {"image", "hostname", "args", "env", "mounts", "configs", "secrets", "healthcheck"}


# -- pure mapping: pulumi-docker inputs -> Docker SDK arguments ----------------------------


def service_arguments(props: dict[str, Any]) -> dict[str, Any]:
    """`client.services.create(**...)` arguments for a Service's declared inputs."""
    _take(props, SERVICE_PROPS, "Service")
    task = _take(props["taskSpec"], TASK_PROPS, "Service.taskSpec")
    spec = _take(task["containerSpec"], CONTAINER_SPEC_PROPS, "Service.taskSpec.containerSpec")
    arguments: dict[str, Any] = {
        "image": spec["image"],
        "name": props["name"],
        "labels": _labels(props),
        "hostname": spec.get("hostname"),
        "args": spec.get("args"),
        "env": [f"{key}={value}" for key, value in sorted(spec.get("env", {}).items())] or None,
        "mounts": [_mount(mount) for mount in spec.get("mounts", [])] or None,
        "configs": [_config_reference(config) for config in spec.get("configs", [])] or None,
        "secrets": [_secret_reference(secret) for secret in spec.get("secrets", [])] or None,
        "healthcheck": _healthcheck(spec.get("healthcheck")),
        "networks": [_network_attachment(network) for network in task.get("networksAdvanceds", [])] or None,
        "constraints": _take(task.get("placement", {}), {"constraints"}, "placement").get("constraints"),
        "restart_policy": _restart_policy(task.get("restartPolicy")),
        "mode": _mode(props.get("mode")),
        "endpoint_spec": _endpoint_spec(props.get("endpointSpec")),
        "update_config": _update_config(props.get("updateConfig"), dt.UpdateConfig, "updateConfig"),
        "rollback_config": _update_config(props.get("rollbackConfig"), dt.RollbackConfig, "rollbackConfig"),
    }
    return {key: value for key, value in arguments.items() if value is not None}


def _mount(mount: dict[str, Any]) -> dt.Mount:
    _take(mount, {"type", "source", "target", "readOnly"}, "containerSpec.mounts")
    if mount["type"] != "volume":
        raise UnhandledPropertyError(f"mount type {mount['type']!r}: only volumes are realized")
    return dt.Mount(target=mount["target"], source=mount["source"], type="volume",
                    read_only=bool(mount.get("readOnly")))


def _config_reference(config: dict[str, Any]) -> dt.ConfigReference:
    _take(config, {"configId", "configName", "fileName"}, "containerSpec.configs")
    return dt.ConfigReference(config["configId"], config["configName"], filename=config["fileName"])


def _secret_reference(secret: dict[str, Any]) -> dt.SecretReference:
    _take(secret, {"secretId", "secretName", "fileName"}, "containerSpec.secrets")
    return dt.SecretReference(secret["secretId"], secret["secretName"], filename=secret["fileName"])


def _healthcheck(check: dict[str, Any] | None) -> dt.Healthcheck | None:
    if not check:
        return None
    _take(check, {"tests", "interval", "timeout", "retries", "startPeriod"}, "containerSpec.healthcheck")
    return dt.Healthcheck(
        test=check["tests"], interval=_nanoseconds(check.get("interval", "30s")),
        timeout=_nanoseconds(check.get("timeout", "30s")), retries=int(check.get("retries", 3)),
        start_period=_nanoseconds(check.get("startPeriod", "0s")),
    )


def _network_attachment(network: dict[str, Any]) -> dt.NetworkAttachmentConfig:
    _take(network, {"id", "aliases"}, "taskSpec.networksAdvanceds")
    return dt.NetworkAttachmentConfig(network["id"], aliases=network.get("aliases"))


def _restart_policy(policy: dict[str, Any] | None) -> dt.RestartPolicy | None:
    if not policy:
        return None
    _take(policy, {"condition", "delay"}, "taskSpec.restartPolicy")
    return dt.RestartPolicy(condition=policy["condition"], delay=_nanoseconds(policy.get("delay", "0s")))


def _mode(mode: dict[str, Any] | None) -> dt.ServiceMode:
    mode = mode or {"replicated": {"replicas": 1}}
    _take(mode, {"replicated", "global"}, "Service.mode")
    if "global" in mode:
        return dt.ServiceMode("global")
    replicated = _take(mode["replicated"], {"replicas"}, "Service.mode.replicated")
    return dt.ServiceMode("replicated", replicas=int(replicated.get("replicas", 1)))


def _endpoint_spec(endpoint: dict[str, Any] | None) -> dt.EndpointSpec | None:
    if not endpoint:
        return None
    _take(endpoint, {"mode", "ports"}, "Service.endpointSpec")
    ports: dict[int, tuple[int, str, str]] = {}
    for port in endpoint.get("ports", []):
        _take(port, {"targetPort", "publishedPort", "publishMode", "protocol"}, "endpointSpec.ports")
        ports[int(port["publishedPort"])] = (
            int(port["targetPort"]), port.get("protocol", "tcp"), port.get("publishMode", "ingress"))
    return dt.EndpointSpec(mode=endpoint.get("mode"), ports=ports or None)


def _update_config(config: dict[str, Any] | None, kind: type, what: str) -> Any:
    if not config:
        return None
    _take(config, {"parallelism", "delay", "order", "failureAction", "monitor"}, f"Service.{what}")
    return kind(
        parallelism=int(config.get("parallelism", 1)),
        delay=_nanoseconds(config["delay"]) if "delay" in config else None,
        failure_action=config.get("failureAction", "pause"),
        monitor=_nanoseconds(config["monitor"]) if "monitor" in config else None,
        order=config.get("order"),
    )


# kreuzwerker resourceDockerServiceUpdate: `Delay: 7 * time.Second` before the first refresh.
UPDATE_FIRST_LOOK_SECONDS = 7.0


def converge_timeout(props: dict[str, Any]) -> float | None:
    """Seconds the provider waits for a service to converge; None when it does not wait."""
    converge = props.get("convergeConfig")
    if not converge:
        return None
    _take(converge, {"delay", "timeout"}, "Service.convergeConfig")
    return _nanoseconds(converge.get("timeout", "3m")) / 10**9


def first_look_delay(props: dict[str, Any], updated: bool) -> float:
    """Seconds before the provider first checks convergence (its StateChangeConf `Delay`)."""
    if updated:
        return UPDATE_FIRST_LOOK_SECONDS
    # kreuzwerker createConvergeConfig: delay defaults to 7s.
    return _nanoseconds(props["convergeConfig"].get("delay", "7s")) / 10**9


# -- the realizer --------------------------------------------------------------------------


class ServiceNotConvergedError(AssertionError):
    """The provider's converge wait timed out (the update fails, as `pulumi up` would)."""


class SwarmMocks(RealizingMocks):
    """Realizes a swarm stack through the manager's engine, `pulumi up` after `pulumi up`."""

    def __init__(self, client: docker.DockerClient, state: EngineState, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.state = state
        self.replaced: list[tuple[str, str]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        if is_component(args.typ):
            return super().new_resource(args)
        key, props = (args.typ, args.name), unwrap(args.inputs)
        previous = self.state.resources.get(key)
        if previous is not None and previous.inputs == props:
            self.state.steps.append(("same", args.name))
            return previous.id, previous.outputs
        try:
            resource_id, outputs, step = self._apply(args.typ, args.name, props, previous)
        except BaseException as error:
            self.errors.append(error)
            raise
        self.state.resources[key] = ResourceState(resource_id, props, outputs)
        self.state.steps.append((step, args.name))
        return resource_id, outputs

    def _apply(
        self, typ: str, name: str, props: dict[str, Any], previous: ResourceState | None
    ) -> tuple[str, dict[str, Any], str]:
        if typ == SERVICE:
            if previous is None:
                return self._create_service(props), props, "create"
            return self._update_service(previous.id, props), props, "update"
        if typ in (SECRET, CONFIG):
            resource_id = self._create_file_object(typ, props)
            if previous is not None:
                self.replaced.append((typ, previous.id))  # deleted once the services moved on
            return resource_id, props, "replace" if previous else "create"
        if typ == NETWORK and previous is not None:
            return previous.id, previous.outputs, "same"
        if previous is not None and typ != CONTAINER:
            raise UnhandledPropertyError(f"{name}: the swarm stand-in does not change a {typ}")
        if previous is not None:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.containers.get(previous.inputs["name"]).remove(force=True)
        handler = RealizingMocks._HANDLERS.get(typ)
        if handler is None:
            raise UnhandledPropertyError(f"the e2e realizer does not handle resource type {typ}")
        resource_id, outputs = handler(self, name, props)
        return resource_id, outputs, "replace" if previous else "create"

    # -- swarm objects ----------------------------------------------------------------------

    def _create_file_object(self, typ: str, props: dict[str, Any]) -> str:
        _take(props, {"name", "data", "labels"}, typ)
        data = base64.b64decode(props["data"])
        collection = self.client.secrets if typ == SECRET else self.client.configs
        created = collection.create(name=props["name"], data=data, labels=_labels(props))
        self.realized.created.append(("secret" if typ == SECRET else "config", created.id))
        return str(created.id)

    def _create_service(self, props: dict[str, Any]) -> str:
        service = self.client.services.create(**service_arguments(props))
        self.realized.created.append(("service", service.id))
        self._converge(service.id, props, updated=False)
        return str(service.id)

    def _update_service(self, service_id: str, props: dict[str, Any]) -> str:
        service = self.client.services.get(service_id)
        arguments = service_arguments(props)
        # The provider sends the whole new spec (kreuzwerker createServiceSpec from the inputs
        # alone); docker-py's Service.update would merge it into the current one by default
        # (fetch_current_spec=True), keeping a mount or constraint the inputs no longer have.
        service.update(**arguments, fetch_current_spec=False)
        self._converge(service_id, props, updated=True)
        return service_id

    def _converge(self, service_id: str, props: dict[str, Any], updated: bool) -> None:
        timeout = converge_timeout(props)
        if timeout is None:
            return
        deadline = time.monotonic() + timeout
        time.sleep(first_look_delay(props, updated))
        last = ""
        while time.monotonic() < deadline:
            service = self.client.services.get(service_id)
            last = _convergence(service, updated)
            if not last:
                return
            time.sleep(1)
        logs = _task_errors(self.client.services.get(service_id))
        raise ServiceNotConvergedError(f"service {props['name']} did not converge in {timeout:.0f} s: {last}\n{logs}")

    def finish(self) -> None:
        """The end of an update: objects that were replaced are deleted (create-before-delete)."""
        for typ, object_id in self.replaced:
            collection = self.client.secrets if typ == SECRET else self.client.configs
            with contextlib.suppress(docker.errors.NotFound):
                collection.get(object_id).remove()
        self.replaced = []


def _convergence(service: Any, updated: bool) -> str:
    """What the service still waits for; empty when it has converged."""
    attrs = service.attrs
    update = attrs.get("UpdateStatus", {}).get("State")
    if updated and update not in (None, "completed"):
        if update in ("rollback_completed", "paused", "rollback_paused"):
            raise ServiceNotConvergedError(f"service {attrs['Spec']['Name']}: update {update}: "
                                        f"{attrs['UpdateStatus'].get('Message', '')}")
        return f"update {update}"
    replicas = attrs["Spec"]["Mode"].get("Replicated", {}).get("Replicas", 1)
    tasks = service.tasks(filters={"desired-state": "running"})
    running = [t for t in tasks if t["Status"]["State"] == "running"]
    if len(running) < replicas or len(tasks) > replicas:
        return f"{len(running)}/{replicas} tasks running"
    return ""


def _task_errors(service: Any) -> str:
    lines = []
    for task in service.tasks()[-6:]:
        status = task["Status"]
        lines.append(f"  task {task['ID'][:12]}: {status['State']} {status.get('Err', '')} {status.get('Message', '')}")
    return "\n".join(lines)
