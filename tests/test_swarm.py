"""orchestrator=swarm under mocks: which services, configs and secrets the stack declares, and how
they roll. (tests/e2e/test_swarm_*.py realizes them on a three-node swarm.)"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from typing import Any

import pytest

from components import swarm
from tests import harness

P = "registry-stack"
NODES = ["node1", "node2", "node3"]
BUCKET = "s3://images?region=us-east-1&endpoint=http://s3.internal:9000"
SERVICE = "docker:index/service:Service"
SECRET = "docker:index/secret:Secret"
CONFIG = "docker:index/serviceConfig:ServiceConfig"


def declare_swarm(**values: Any) -> harness.Declaration:
    config = {"users": ["alice:correct-horse-1"], "orchestrator": "swarm", "swarmNodes": NODES,
              "buildReplicas": 3, "buildStorage": BUCKET, "buildStorageCredentials": "AKID:s3cr3t", **values}
    secret_keys = {"users", "buildStorageCredentials"} & set(config)
    return harness.declare({f"{P}:{k}": v for k, v in config.items()}, secret_keys={f"{P}:{k}" for k in secret_keys})


@pytest.fixture(scope="module")
def declared() -> harness.Declaration:
    return declare_swarm()


def services(declaration: harness.Declaration) -> dict[str, dict[str, Any]]:
    return {r.plain_inputs["name"]: r.plain_inputs for r in declaration.of_type(SERVICE)}


def test_services_instead_of_containers(declared):
    names = set(services(declared))
    per_node = {"cache", "cache-standby", "cache-herd", "agent", "front"}
    assert names == {"registry-stack-dev-build"} | {
        f"registry-stack-dev-{role}-{node}" for role in per_node for node in NODES}
    # The only container is the verification, run once on the manager.
    assert list(declared.containers) == ["registry-stack-dev-verify"]
    (network,) = declared.of_type("docker:index/network:Network")
    assert network.plain_inputs["driver"] == "overlay" and network.plain_inputs["attachable"] is True


def test_build_registry_is_replicated_on_the_bucket_and_rolls_start_first(declared):
    build = services(declared)["registry-stack-dev-build"]
    assert build["mode"]["replicated"]["replicas"] == 3
    assert build["endpointSpec"]["mode"] == "dnsrr"
    assert build["updateConfig"]["order"] == "start-first"
    spec = build["taskSpec"]
    assert not spec["containerSpec"].get("mounts"), "a build registry in a bucket has no volume"
    assert not spec.get("placement", {}).get("constraints"), "any node serves"


def test_node_bound_services_stay_on_their_node_and_volume(declared):
    for node in NODES:
        cache = services(declared)[f"registry-stack-dev-cache-{node}"]
        assert cache["taskSpec"]["placement"]["constraints"] == [f"node.hostname=={node}"]
        assert cache["updateConfig"]["order"] == "stop-first"
        (mount,) = cache["taskSpec"]["containerSpec"]["mounts"]
        assert (mount["type"], mount["source"]) == ("volume", "registry-stack-dev-cache-data")
        standby = services(declared)[f"registry-stack-dev-cache-standby-{node}"]
        assert standby["taskSpec"]["containerSpec"]["mounts"][0]["source"] == mount["source"]


def test_each_front_publishes_host_mode_ports_and_dials_its_own_nodes_cache(declared):
    for node in NODES:
        front = services(declared)[f"registry-stack-dev-front-{node}"]
        (port,) = front["endpointSpec"]["ports"]
        assert (port["targetPort"], port["publishedPort"], port["publishMode"]) == (443, 443, "host")
        config = json.loads(front_file(declared, node, "/etc/caddy/caddy.json"))
        text = json.dumps(config)
        assert f"registry-stack-dev-cache-herd-{node}:" in text
        assert all(f"-{other}:" not in text for other in NODES if other != node)
        assert "registry-stack-dev-build:5000" in text
        assert "/registry-data/build" not in text, "the build registry's blobs are not on this node"


def front_file(declaration: harness.Declaration, node: str, path: str) -> str:
    front = declaration.named(f"registry-front-{node}")
    secrets = harness.unwrap(front.inputs)["taskSpec"]["containerSpec"]["secrets"]
    (mounted,) = [s for s in secrets if s["fileName"] == path]
    (secret,) = [r for r in declaration.of_type(SECRET) if r.plain_inputs["name"] == mounted["secretName"]]
    assert isinstance(secret.inputs["data"], harness.SecretValue)
    return base64.b64decode(secret.plain_inputs["data"]).decode()


def test_secrets_are_swarm_secrets_and_files_are_configs(declared):
    build = declared.named("registry-build")
    secrets = harness.unwrap(build.inputs)["taskSpec"]["containerSpec"]["secrets"]
    assert [s["fileName"] for s in secrets] == ["/etc/distribution/config.yml"]
    (secret,) = [r for r in declared.of_type(SECRET) if r.plain_inputs["name"] == secrets[0]["secretName"]]
    assert isinstance(secret.inputs["data"], harness.SecretValue)
    assert "s3cr3t" in base64.b64decode(secret.plain_inputs["data"]).decode()
    assert "s3cr3t" not in json.dumps(harness.unwrap(
        {k: v for k, v in secret.inputs.items() if k != "data"}))
    standby = services(declared)["registry-stack-dev-cache-standby-node1"]["taskSpec"]["containerSpec"]
    assert not standby.get("secrets") and len(standby["configs"]) == 1
    names = [r.plain_inputs["name"] for r in declared.of_type(CONFIG) + declared.of_type(SECRET)]
    assert len(names) == len(set(names)), "every swarm object has a name of its own"
    assert all(len(name) <= 64 for name in names)


def test_new_content_is_a_new_object_name():
    one = swarm.file_object_name("registry-stack-dev", "front-node1", "/etc/caddy/caddy.json", "a")
    assert one == swarm.file_object_name("registry-stack-dev", "front-node1", "/etc/caddy/caddy.json", "a")
    assert one != swarm.file_object_name("registry-stack-dev", "front-node1", "/etc/caddy/caddy.json", "b")
    assert one != swarm.file_object_name("registry-stack-dev", "front-node2", "/etc/caddy/caddy.json", "a")
    assert one.startswith("registry-stack-dev-caddy-json-")
    assert len(swarm.file_object_name("registry-stack-" + "x" * 40, "r" * 30, "/" + "y" * 80, "a")) == 64


def test_nodes_roll_one_after_the_other(declared):
    """Every service of node N depends on node N-1's front: an update reaches node N once N-1 serves."""
    urn = {r.plain_inputs.get("name"): r for r in declared.of_type(SERVICE)}
    for previous, node in itertools.pairwise(NODES):
        for role in ("cache", "cache-standby", "cache-herd", "agent", "front"):
            dependencies = urn[f"registry-stack-dev-{role}-{node}"].options["dependencies"]
            assert any(dep.endswith(f"::registry-front-{previous}") for dep in dependencies), (role, node)
    assert not any("registry-front" in dep for dep in urn["registry-stack-dev-cache-node1"].options["dependencies"])


def test_services_join_the_network_by_id_with_their_aliases(declared):
    front = services(declared)["registry-stack-dev-front-node2"]
    (network,) = front["taskSpec"]["networksAdvanceds"]
    assert "id" in network and "name" not in network
    assert network["aliases"][0] == "registry-stack-dev-front-node2"
    assert "docker-build.dev.internal.network" in network["aliases"]


def test_verification_checks_every_nodes_cache(declared):
    (verify,) = declared.containers.values()
    (script,) = verify.plain_inputs["command"]
    for node in NODES:
        assert f"http://registry-stack-dev-cache-{node}:5000/v2/" in script
        assert f"http://registry-stack-dev-cache-standby-{node}:5000/v2/" in script
    assert "http://registry-stack-dev-build:5000/v2/" in script


def test_one_host_is_unchanged_by_the_swarm_code():
    declaration = harness.declare({f"{P}:users": ["alice:correct-horse-1"]}, secret_keys={f"{P}:users"})
    assert not declaration.of_type(SERVICE) and not declaration.of_type(SECRET)
    assert "registry-stack-dev-front" in declaration.containers


def test_a_volume_build_registry_is_bound_to_the_first_node():
    declaration = declare_swarm(buildReplicas=1, buildStorage="", buildStorageCredentials="")
    build = services(declaration)["registry-stack-dev-build"]
    assert build["taskSpec"]["placement"]["constraints"] == ["node.hostname==node1"]
    assert build["taskSpec"]["containerSpec"]["mounts"][0]["source"] == "registry-stack-dev-build-data"
    assert build["updateConfig"]["order"] == "stop-first"


def test_the_e2e_realizer_maps_every_declared_service_property(declared):
    """testbed/realize_swarm.py turns each declared Service into Docker SDK arguments, or fails
    naming the property it does not handle (so the e2e proof cannot silently drop one)."""
    from testbed import realize_swarm

    for resource in declared.of_type(SERVICE):
        arguments = realize_swarm.service_arguments(resource.plain_inputs)
        assert arguments["name"] == resource.plain_inputs["name"]
        assert realize_swarm.converge_timeout(resource.plain_inputs) == 180
    front = realize_swarm.service_arguments(services(declared)["registry-stack-dev-front-node1"])
    assert front["endpoint_spec"]["Ports"] == [
        {"PublishedPort": 443, "TargetPort": 443, "Protocol": "tcp", "PublishMode": "host"}]
    assert front["endpoint_spec"]["Mode"] == "dnsrr"
    assert front["constraints"] == ["node.hostname==node1"]
    with pytest.raises(realize_swarm.UnhandledPropertyError, match="resources"):
        realize_swarm.service_arguments({**services(declared)["registry-stack-dev-build"],
                                         "taskSpec": {"containerSpec": {"image": "x"}, "resources": {}}})


def _build_config(declaration: harness.Declaration) -> dict[str, Any]:
    build = declaration.named("registry-build")
    (mounted,) = harness.unwrap(build.inputs)["taskSpec"]["containerSpec"]["secrets"]
    (secret,) = [r for r in declaration.of_type(SECRET) if r.plain_inputs["name"] == mounted["secretName"]]
    assert isinstance(secret.inputs["data"], harness.SecretValue)
    config: dict[str, Any] = json.loads(base64.b64decode(secret.plain_inputs["data"]))
    return config


@pytest.mark.parametrize("storage", ["bucket", "volume"])
def test_every_build_replica_signs_uploads_with_one_secret_kept_in_state(storage: str) -> None:
    """distribution: behind a load balancer every registry MUST have the same http.secret, or an
    upload whose PATCH reaches another replica than its POST fails. One RandomId, a swarm secret."""
    values = {} if storage == "bucket" else {"buildReplicas": 1, "buildStorage": "", "buildStorageCredentials": ""}
    declaration = declare_swarm(**values)
    secret = _build_config(declaration)["http"]["secret"]
    (seed,) = [r for r in declaration.resources if r.name.endswith("-build-http-secret")]
    assert seed.plain_inputs["byteLength"] == 32
    # The harness's RandomId is sha256 of its name (tests/harness.py): the secret is that one.
    assert base64.b64decode(secret) == hashlib.sha256(seed.name.encode()).digest()
    assert secret not in json.dumps(harness.unwrap(declaration.outputs))


def test_one_host_build_registry_keeps_its_own_http_secret() -> None:
    declaration = harness.declare({f"{P}:users": ["alice:correct-horse-1"]}, secret_keys={f"{P}:users"})
    assert not [r for r in declaration.resources if r.name.endswith("-build-http-secret")]
