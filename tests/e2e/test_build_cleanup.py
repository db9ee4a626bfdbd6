"""Build-registry cleanup on the engine: retention rules, the read-only window, the report.

One stack of its own (buildCleanup set, no cache: the window concerns the build registry only).
Tags are pushed with the docker CLI; "old" tags are made old the way time would, by the push
time the rules read (the mtime of the tag's current/link in the build volume).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from components import build_cleanup, renderers
from testbed.clients import MANIFEST_TYPES, DockerCli, digest_in, https, pull_and_forget, push_unique_image, wait_until
from testbed.stack import RealizedStack, realized_stack, update_stack

STACK = os.environ.get("E2E_STACK", "e2e-cleanup")
DAY = 86400
TAGS_DIR = f"{renderers.REGISTRY_DATA_DIR}/docker/registry/v2/repositories/{{repository}}/_manifests/tags/{{tag}}"


@pytest.fixture(scope="module")
def cleanup_stack(docker_client: docker.DockerClient, local_images: dict[str, str]) -> Iterator[RealizedStack]:
    overrides = {
        "enableCache": False,
        "buildCleanup": "03:00",
        "buildKeepTags": 2,
        "buildKeepDays": 7,
        "buildProtectedTags": ["latest", "v*", "team/base:stable-*"],
    }
    with realized_stack(docker_client, stack=STACK, overrides=overrides) as (stack, _upstream):
        yield stack


def _age(build: Any, repository: str, tag: str, days: int) -> None:
    """Make a tag's push time `days` ago (what the retention rules read)."""
    link = TAGS_DIR.format(repository=repository, tag=tag) + "/current/link"
    stamp = int(time.time()) - days * DAY
    result = build.exec_run(["busybox", "touch", "-d", f"@{stamp}", link])
    assert result.exit_code == 0, result.output


def _manifest_status(stack: RealizedStack, repository: str, reference: str) -> int:
    answer = https(
        stack.url("build", f"/v2/{repository}/manifests/{reference}"), stack.ca_file,
        method="HEAD", auth=("admin", stack.password), headers={"Accept": MANIFEST_TYPES},
    )
    return answer.status


def _push(cli: DockerCli, stack: RealizedStack, repository: str, tag: str) -> str:
    return digest_in(push_unique_image(cli, f"{stack.address('build')}/{repository}:{tag}").stdout)


def test_cleanup_deletes_what_the_rules_select_and_keeps_everything_protected(
    cleanup_stack: RealizedStack, docker_cli: DockerCli
) -> None:
    stack = cleanup_stack
    build = stack.container("build")
    docker_cli.login(stack.address("build"), "admin", stack.password)
    # team/app: a protected "latest" and "v1.0" (both old), three old builds and two new ones.
    # team/base: the oldest, "stable-1", protected by a repository pattern; three more.
    ages = {
        ("team/app", "latest"): 90, ("team/app", "v1.0"): 60,
        ("team/app", "build-1"): 30, ("team/app", "build-2"): 20, ("team/app", "build-3"): 10,
        ("team/app", "build-4"): 0, ("team/app", "build-5"): 0,
        ("team/base", "stable-1"): 60, ("team/base", "old"): 50, ("team/base", "nightly"): 40,
        ("team/base", "edge"): 0,
    }
    digests = {name: _push(docker_cli, stack, *name) for name in ages}
    # A protected multi-platform index whose children are build-1 and build-2: deleting their
    # tags must not take the manifests the index needs (they become untagged).
    children = [digests[("team/app", "build-1")], digests[("team/app", "build-2")]]
    _put_index(stack, "team/app", "v2.0", children)
    for (repository, tag), days in ages.items():
        if days:
            _age(build, repository, tag, days)
    # The newest two unprotected tags stay; of the others, all are older than 7 days and go.
    kept = {("team/app", t) for t in ("latest", "v1.0", "build-4", "build-5")} | {
        ("team/base", t) for t in ("stable-1", "nightly", "edge")}
    deleted = set(ages) - kept
    assert deleted == {("team/app", "build-1"), ("team/app", "build-2"), ("team/app", "build-3"), ("team/base", "old")}

    dry = json.loads(build.exec_run([build_cleanup.SCRIPT_PATH, "now", "--dry-run"]).output)
    assert {(e["repository"], e["tag"]) for e in dry["wouldDelete"]} == deleted
    assert all(_manifest_status(stack, r, t) == 200 for r, t in ages), "a dry run deleted something"

    # Held open after the collection, so that the pushes and pulls below meet the writer stopped.
    window = _run_window_in_background(build, hold_seconds=12)
    _wait_for_writer_stopped(build)
    # During the window: a push gets the read-only error, pulls by tag and by digest work.
    refused = push_unique_image(docker_cli, f"{stack.address('build')}/team/app:during-window", check=False)
    assert refused.returncode != 0
    assert "read-only while its maintenance window runs" in refused.stderr, refused.stderr
    print(f"push during the window: {refused.stderr.strip().splitlines()[-1]}")
    for repository, tag in (("team/app", "latest"), ("team/base", "stable-1")):
        reference = f"{stack.address('build')}/{repository}@{digests[(repository, tag)]}"
        pull_and_forget(docker_cli, reference)
        assert _manifest_status(stack, repository, tag) == 200
    # The writer was stopped before and after the pulls, so the read-only twin served them.
    assert _serving_ports(build) == {renderers.MAINTENANCE_PORT}, "the window ended before the pulls did"
    window.join(timeout=120)
    assert not window.is_alive(), "the window did not end within 120 s"
    exit_code, output = window.result  # type: ignore[attr-defined]
    report = json.loads(output)
    assert exit_code == 0 and report["status"] == "ok", output

    assert {(e["repository"], e["tag"]) for e in report["deleted"]} == deleted
    assert report["bytesFreed"] > 0 and report["storageBytesAfter"] < report["storageBytesBefore"]
    assert report["garbageCollect"]["exitCode"] == 0 and report["garbageCollect"]["blobsDeleted"] > 0
    # The untagged manifests went too, except the two the kept index needs.
    gone = {f"{r}@{digests[(r, t)]}" for r, t in deleted if digests[(r, t)] not in children}
    assert set(report["untaggedManifestsDeleted"]) == gone
    for repository, tag in deleted:
        assert _manifest_status(stack, repository, tag) == 404, f"{repository}:{tag} survived"
        gone = digests[(repository, tag)] not in children  # the kept index still needs those two
        assert _manifest_status(stack, repository, digests[(repository, tag)]) == (404 if gone else 200)
    pull_and_forget(docker_cli, f"{stack.address('build')}/team/app:v2.0")
    for repository, tag in kept:
        reference = f"{stack.address('build')}/{repository}@{digests[(repository, tag)]}"
        pull_and_forget(docker_cli, reference)
    # The report is in the log too, and pushes work again after the window.
    logs = build.logs(tail=500).decode(errors="replace")
    assert "deleted team/app:build-1" in logs and f"{report['bytesFreed']} bytes freed" in logs
    _push(docker_cli, stack, "team/app", "after-window")


def _put_index(stack: RealizedStack, repository: str, tag: str, children: list[str]) -> None:
    """Push an OCI image index of the given manifests (same repository) under `tag`."""
    entries = []
    for digest in children:
        head = https(stack.url("build", f"/v2/{repository}/manifests/{digest}"), stack.ca_file, method="HEAD",
                     auth=("admin", stack.password), headers={"Accept": MANIFEST_TYPES})
        entries.append({
            "mediaType": head.headers["content-type"], "digest": digest, "size": int(head.headers["content-length"]),
            "platform": {"architecture": "amd64", "os": "linux"},
        })
    index_type = "application/vnd.oci.image.index.v1+json"
    body = json.dumps({"schemaVersion": 2, "mediaType": index_type, "manifests": entries}).encode()
    answer = https(stack.url("build", f"/v2/{repository}/manifests/{tag}"), stack.ca_file, method="PUT",
                   auth=("admin", stack.password), headers={"Content-Type": index_type}, data=body)
    assert answer.status == 201, answer.body


def _serving_ports(build: Any) -> set[int]:
    """Which of the writer's and the read-only twin's ports answer inside the build container."""
    ports = (renderers.REGISTRY_PORT, renderers.MAINTENANCE_PORT)
    probe = ["busybox", "wget", "-q", "-O", "/dev/null"]
    return {port for port in ports if build.exec_run([*probe, f"http://127.0.0.1:{port}/v2/"]).exit_code == 0}


def _run_window_in_background(build: Any, hold_seconds: int) -> threading.Thread:
    def run() -> None:
        result = build.exec_run([build_cleanup.SCRIPT_PATH, "now", "--hold", str(hold_seconds)], demux=True)
        thread.result = (result.exit_code, (result.output[0] or b"").decode())  # type: ignore[attr-defined]

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_for_writer_stopped(build: Any) -> None:
    """Until pushes are refused (the marker) and only the read-only twin answers."""
    marker = f"{renderers.REGISTRY_DATA_DIR}/{renderers.MAINTENANCE_MARKER}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _serving_ports(build) == {renderers.MAINTENANCE_PORT}:
            assert build.exec_run(["busybox", "test", "-e", marker]).exit_code == 0, "writer stopped, no marker"
            return
        time.sleep(0.3)
    raise AssertionError("the window did not stop the writer within 60 s")


def test_the_daily_time_runs_the_window_by_itself(
    cleanup_stack: RealizedStack, docker_client: docker.DockerClient, docker_cli: DockerCli
) -> None:
    """A `pulumi up` that sets the time to this minute: the new build container runs it once."""
    stack = cleanup_stack
    this_minute = time.strftime("%H:%M", time.gmtime())
    update_stack(docker_client, stack, {"buildCleanup": this_minute})
    build = stack.container("build")
    report_path = f"{build_cleanup.STATE_DIR}/last-report.json"

    def scheduled_report() -> dict[str, Any]:
        result = build.exec_run(["cat", report_path])
        report = json.loads(result.output) if result.exit_code == 0 else {}
        assert report.get("id", "").startswith("scheduled-"), report.get("id")
        return report

    report = wait_until(scheduled_report, 90, "the scheduled window's report")
    assert report["status"] == "ok" and report["dryRun"] is False
    assert f"window {report['id']} ok" in build.logs(tail=200).decode(errors="replace")
    # Once per day: the supervisor records the run and does not start another in the slot.
    time.sleep(6)
    assert scheduled_report()["id"] == report["id"]
    docker_cli.login(stack.address("build"), "admin", stack.password)
    _push(docker_cli, stack, "team/app", "after-scheduled-window")
