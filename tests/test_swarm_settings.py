"""orchestrator, swarmNodes, buildReplicas, buildStorage(+Credentials): checks and rendering.

Values come as the CLI hands them to the program (tests/harness.py); every error names the key,
the value (never a secret) and the fix. The rendered build config follows distribution's s3
driver docs (docs/content/storage-drivers/s3.md of distribution/distribution).
"""

from __future__ import annotations

import json

import pytest

from components import renderers
from components.config_schema import ConfigError
from tests import harness

P = "registry-stack"
USERS = ["alice:correct-horse-1"]
SECRETS = {"users", "buildStorageCredentials"}
BUCKET = "s3://images/site-a?region=us-east-1&endpoint=http://s3.internal:9000"


def load(**values):
    raw = {"users": USERS, **values}
    return harness.settings(raw, SECRETS & set(raw), "dev")


def swarm(**values):
    return load(orchestrator="swarm", swarmNodes=["node1", "node2"], **values)


def test_docker_is_the_default_and_changes_nothing():
    topology = load().topology
    assert (topology.orchestrator, topology.nodes, topology.build_replicas, topology.build_storage) == (
        "docker", (), 1, None)
    assert load().front_sees_build_storage


def test_a_swarm_with_a_bucket():
    settings = swarm(buildReplicas="3", buildStorage=BUCKET, buildStorageCredentials="AKID:s3cr3t")
    topology = settings.topology
    assert topology.is_swarm and topology.nodes == ("node1", "node2") and topology.build_replicas == 3
    storage = topology.build_storage
    assert storage is not None
    assert (storage.bucket, storage.prefix, storage.region, storage.endpoint, storage.secure) == (
        "images", "site-a", "us-east-1", "http://s3.internal:9000", False)
    assert storage.access_key == "AKID" and storage.secret_key is not None and storage.secret_key.reveal() == "s3cr3t"
    assert "s3cr3t" not in repr(settings)
    assert not settings.front_sees_build_storage


BAD = [
    ({"orchestrator": "kubernetes"}, ["orchestrator", "'kubernetes'", "docker, swarm"]),
    ({"orchestrator": "swarm"}, ["swarmNodes is empty", "docker node ls"]),
    ({"swarmNodes": ["node1"]}, ["swarmNodes is set", "orchestrator"]),
    ({"buildReplicas": "2"}, ["buildReplicas=2", "orchestrator=swarm"]),
    ({"orchestrator": "swarm", "swarmNodes": ["node1"], "buildReplicas": "3"}, ["buildReplicas=3", "buildStorage"]),
    ({"orchestrator": "swarm", "swarmNodes": ["node1", "Node1"]}, ["swarmNodes[1]", "twice"]),
    ({"orchestrator": "swarm", "swarmNodes": ["node_1"]}, ["swarmNodes[0]", "'node_1'", "HOSTNAME"]),
    ({"buildStorage": "https://images"}, ["buildStorage", "s3://<bucket>"]),
    ({"buildStorage": "s3://Images?region=us-east-1"}, ["buildStorage", "bucket name"]),
    ({"buildStorage": "s3://images"}, ["buildStorage", "region"]),
    ({"buildStorage": "s3://images?region=us-east-1&acl=x"}, ["unknown option 'acl'", "region, endpoint"]),
    ({"buildStorage": "s3://images?region=us-east-1&endpoint=s3.internal"}, ["endpoint='s3.internal'", "http(s)"]),
    ({"buildStorageCredentials": "AKID:s3cr3t"}, ["buildStorageCredentials is set", "buildStorage is empty"]),
    ({"buildStorage": BUCKET, "buildStorageCredentials": "no-colon"}, ["buildStorageCredentials=****", "accessKey"]),
    ({"orchestrator": "swarm", "swarmNodes": ["node1"], "dataPath": "/srv/registry"}, ["dataPath", "swarm"]),
]


@pytest.mark.parametrize(("values", "contains"), BAD, ids=[str(v) for v, _ in BAD])
def test_bad_topology_is_refused_naming_the_key(values, contains):
    with pytest.raises(ConfigError) as error:
        load(**values)
    message = str(error.value)
    for part in contains:
        assert part in message
    assert "s3cr3t" not in message and "no-colon" not in message


def rendered_storage(settings, major: int = 3) -> dict:
    return json.loads(renderers.registry_config(
        "build", major, storage=settings.topology.build_storage, storage_secret_key="s3cr3t"))["storage"]


def test_build_config_in_a_bucket_on_3x():
    storage = rendered_storage(load(buildStorage=BUCKET, buildStorageCredentials="AKID:s3cr3t"))
    assert "filesystem" not in storage
    assert storage["s3"] == {
        "bucket": "images", "region": "us-east-1", "regionendpoint": "http://s3.internal:9000",
        "forcepathstyle": True, "secure": False, "v4auth": True, "rootdirectory": "/site-a",
        "accesskey": "AKID", "secretkey": "s3cr3t",
    }
    # Blobs stream through the registry: the store stays private to the stack.
    assert storage["redirect"] == {"disable": True}
    assert storage["delete"] == {"enabled": True}


def test_build_config_in_a_bucket_on_2x_has_no_forcepathstyle():
    storage = rendered_storage(load(registryImage="registry:2.8.3", buildStorage=BUCKET), major=2)
    assert "forcepathstyle" not in storage["s3"] and storage["s3"]["regionendpoint"] == "http://s3.internal:9000"


def test_aws_itself_needs_no_endpoint_and_no_keys():
    storage = rendered_storage(load(buildStorage="s3://images?region=eu-central-1"))
    assert storage["s3"] == {"bucket": "images", "region": "eu-central-1", "secure": True, "v4auth": True}


def test_only_the_build_registry_goes_into_a_bucket():
    settings = load(buildStorage=BUCKET)
    with pytest.raises(ValueError, match="only the build registry"):
        renderers.registry_config("cache", 3, "https://registry-1.docker.io", storage=settings.topology.build_storage)


def build_upload(values: dict, secret_keys: set[str]) -> object:
    declaration = harness.declare({f"{P}:{k}": v for k, v in {"users": USERS, **values}.items()},
                                  secret_keys={f"{P}:{k}" for k in secret_keys | {"users"}})
    uploads = declaration.containers["registry-stack-dev-build"].inputs["uploads"]
    if isinstance(uploads, harness.SecretValue):
        return uploads
    (upload,) = uploads
    return upload if isinstance(upload, harness.SecretValue) else upload["content"]


def test_the_build_config_with_the_secret_key_is_a_secret():
    upload = build_upload({"buildStorage": BUCKET, "buildStorageCredentials": "AKID:s3cr3t"},
                          {"buildStorageCredentials"})
    assert isinstance(upload, harness.SecretValue)
    assert "s3cr3t" in json.dumps(harness.unwrap(upload))
    assert not isinstance(build_upload({"buildStorage": "s3://images?region=eu-central-1"}, set()),
                          harness.SecretValue)


def test_a_build_registry_in_a_bucket_has_no_volume():
    declaration = harness.declare({f"{P}:users": USERS, f"{P}:buildStorage": BUCKET}, secret_keys={f"{P}:users"})
    build = declaration.containers["registry-stack-dev-build"].plain_inputs
    assert not build.get("volumes")
    front = declaration.containers["registry-stack-dev-front"].plain_inputs
    assert not any("/registry-data/build" in v["containerPath"] for v in front["volumes"])


def test_front_sends_stored_build_blobs_only_from_a_volume():
    def blob_routes(settings) -> int:
        return renderers.front_config(settings, [("alice", "x")]).count("/registry-data/build")

    assert blob_routes(load()) > 0
    assert blob_routes(load(buildStorage=BUCKET)) == 0
