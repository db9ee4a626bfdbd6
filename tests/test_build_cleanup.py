"""Build-registry cleanup: its keys, the retention rules, the schedule, the files and routes it adds.

The retention rules have one implementation, in the script the build container runs
(components/build_cleanup.sh); these tests run that script with busybox's sh and applets (as
the official, Alpine-based registry image has them) on real storage folders, with the push
times the rules read (the mtime of each tag's current/link). The window itself, with a real
registry and front, is tests/e2e/test_build_cleanup.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components import build_cleanup, renderers
from components.settings import ConfigError, Settings, settings_from_values
from tests.harness import declare

USERS = ["alice:correct-horse-1"]
NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
DAY = 86400
BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def content_seed() -> bytes:
    return secrets.token_bytes(16)


def settings(**values: Any) -> Settings:
    return settings_from_values({"users": USERS, **values}, "dev")


# -- keys ------------------------------------------------------------------------------------


def test_cleanup_is_off_by_default_and_keeps_latest() -> None:
    cleanup = settings().cleanup
    assert not cleanup.enabled
    assert (cleanup.keep_tags, cleanup.keep_days, cleanup.protected) == (10, 30, ("latest",))


@pytest.mark.parametrize(("schedule", "daily"), [("03:00", "03:00"), ("23:59", "23:59"), ("manual", ""),
                                                  (" Manual ", "")])
def test_a_daily_time_or_manual_turns_the_cleanup_on(schedule: str, daily: str) -> None:
    cleanup = settings(buildCleanup=schedule).cleanup
    assert cleanup.enabled and cleanup.daily_time == daily


@pytest.mark.parametrize(("values", "named"), [
    ({"buildCleanup": "3:00"}, ["buildCleanup='3:00' is invalid", '"HH:MM"', "manual"]),
    ({"buildCleanup": "24:00"}, ["buildCleanup='24:00'"]),
    ({"buildCleanup": "daily"}, ["buildCleanup='daily'"]),
    ({"buildKeepTags": 0}, ["buildKeepTags=0", "from 1 to"]),
    ({"buildKeepDays": -1}, ["buildKeepDays=-1", "from 0 to"]),
    ({"buildProtectedTags": ["latest", "v 1"]}, ["buildProtectedTags[1]='v 1' is invalid", '"team/*:stable"']),
    ({"buildProtectedTags": ["$(reboot)"]}, ["buildProtectedTags[0]='$(reboot)'"]),
    ({"buildProtectedTags": ["Team/*:x"]}, ["buildProtectedTags[0]='Team/*:x'"]),
    ({"buildCleanup": "03:00", "enableBuild": False}, ["buildCleanup='03:00' but registry-stack:enableBuild"]),
    ({"buildCleanup": "manual", "buildStorage": "s3://bucket?region=eu-west-1"},
     ["buildCleanup='manual' with registry-stack:buildStorage", "bucket"]),
    ({"buildCleanup": "manual", "orchestrator": "swarm", "swarmNodes": ["node1"]},
     ["buildCleanup='manual' with registry-stack:orchestrator=swarm"]),
])
def test_bad_cleanup_values_name_key_value_and_fix(values: dict[str, Any], named: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        settings(**values)
    for text in named:
        assert text in str(error.value)


def test_protected_patterns_are_kept_once_each_in_order() -> None:
    patterns = ["v*", "latest", "team/*:stable-?", "v*"]
    assert settings(buildProtectedTags=patterns).cleanup.protected == ("v*", "latest", "team/*:stable-?")


# -- the retention rules, run by the script ----------------------------------------------------


class Storage:
    """A build registry's storage folder with tags pushed at given times."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repositories = root / "data/docker/registry/v2/repositories"
        self.tools = root / "bin"
        self.tools.mkdir(parents=True)
        # Nothing but busybox on PATH: the script must link what it needs, as in the e2e image.
        (self.tools / "busybox").symlink_to(BUSYBOX)

    def tag(self, repository: str, tag: str, days_ago: float = 0, digest: str = "ab" * 32) -> None:
        link = self.repositories / repository / "_manifests/tags" / tag / "current/link"
        link.parent.mkdir(parents=True)
        link.write_text(f"sha256:{digest}")  # as distribution writes it: no final newline
        stamp = NOW - int(days_ago * DAY)
        os.utime(link, (stamp, stamp))

    def manifest(self, repository: str, *references: str) -> str:
        """Store a manifest naming `references` (digests' hex) in `repository`; its digest's hex."""
        content = json.dumps({"schemaVersion": 2, "manifests": [{"digest": f"sha256:{r}"} for r in references],
                              "layers": [{"digest": "sha256:" + hashlib.sha256(content_seed()).hexdigest()}]})
        hex_digest = hashlib.sha256(content.encode()).hexdigest()
        data = self.root / "data/docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
        data.parent.mkdir(parents=True)
        data.write_text(content)
        revision = self.repositories / repository / "_manifests/revisions/sha256" / hex_digest / "link"
        revision.parent.mkdir(parents=True)
        revision.write_text(f"sha256:{hex_digest}")
        return hex_digest

    def untagged(self) -> set[tuple[str, str]]:
        return {tuple(line.split()) for line in self.run("untagged").splitlines()}  # type: ignore[misc]

    def conf(self, **values: Any) -> Path:
        """The conf the program renders, with this folder as the storage and the rules given."""
        rendered = build_cleanup.cleanup_conf(settings(**{"buildCleanup": "03:00", **values}))
        path = self.root / "build-cleanup.conf"
        local = {"DATA_DIR": self.root / "data", "STATE_DIR": self.root / "state", "RUN_DIR": self.root / "run"}
        path.write_text(rendered + "".join(f"{name}='{value}'\n" for name, value in local.items()))
        return path

    def run(self, *args: str, now: int = NOW, **values: Any) -> str:
        environment = {
            "PATH": str(self.tools), "REGISTRY_STACK_CLEANUP_CONF": str(self.conf(**values)),
            "REGISTRY_STACK_CLEANUP_NOW": str(now),
        }
        result = subprocess.run(
            [BUSYBOX, "sh", str(build_cleanup.SCRIPT_SOURCE), *args],
            env=environment, capture_output=True, text=True, check=False, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def plan(self, **values: Any) -> dict[tuple[str, str], str]:
        """(repository, tag) -> "keep <reason>" or "delete <reason>"."""
        decisions = {}
        for line in self.run("plan", **values).splitlines():
            decision, reason, _pushed, repository, tag = line.split()
            decisions[(repository, tag)] = f"{decision} {reason}"
        return decisions

    def deleted(self, **values: Any) -> set[tuple[str, str]]:
        return {name for name, decision in self.plan(**values).items() if decision.startswith("delete")}


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    assert os.path.exists(BUSYBOX), "busybox is missing: apt-get install busybox-static (scripts/install-test-deps)"
    return Storage(tmp_path)


def test_the_newest_tags_and_the_young_ones_stay_the_rest_goes(storage: Storage) -> None:
    for index, days in enumerate((100, 50, 20, 9, 3, 1)):
        storage.tag("team/app", f"build-{index}", days)
    plan = storage.plan(buildKeepTags=2, buildKeepDays=10, buildProtectedTags=[])
    assert plan[("team/app", "build-5")] == "keep newest:1"
    assert plan[("team/app", "build-4")] == "keep newest:2"
    assert plan[("team/app", "build-3")] == "keep younger-than:10d"
    assert storage.deleted(buildKeepTags=2, buildKeepDays=10, buildProtectedTags=[]) == {
        ("team/app", "build-0"), ("team/app", "build-1"), ("team/app", "build-2")}


def test_a_protected_tag_stays_however_old_and_does_not_take_a_newest_place(storage: Storage) -> None:
    storage.tag("app", "latest", 400)
    storage.tag("app", "v1.2.3", 300)
    storage.tag("app", "release-7", 200)
    for index, days in enumerate((90, 80, 70)):
        storage.tag("app", f"ci-{index}", days)
    plan = storage.plan(buildKeepTags=1, buildKeepDays=0, buildProtectedTags=["latest", "v*", "release-?"])
    assert plan[("app", "latest")] == "keep protected:latest"
    assert plan[("app", "v1.2.3")] == "keep protected:v*"
    assert plan[("app", "release-7")] == "keep protected:release-?"
    # The one newest place goes to the newest unprotected tag.
    assert plan[("app", "ci-2")] == "keep newest:1"
    assert {name for name, d in plan.items() if d.startswith("delete")} == {("app", "ci-0"), ("app", "ci-1")}


def test_a_repository_pattern_protects_only_in_the_repositories_it_matches(storage: Storage) -> None:
    for repository in ("team/base", "team/base/extra", "other/base"):
        storage.tag(repository, "stable", 100)
        storage.tag(repository, "new", 0)
    deleted = storage.deleted(buildKeepTags=1, buildKeepDays=0, buildProtectedTags=["team/*:stable"])
    # `*` matches "/" too: team/base/extra is covered; other/base is not.
    assert deleted == {("other/base", "stable")}


def test_each_repository_counts_its_own_newest_tags(storage: Storage) -> None:
    storage.tag("a", "old", 100)
    storage.tag("b", "old", 100)
    storage.tag("b", "new", 0)
    assert storage.deleted(buildKeepTags=1, buildKeepDays=0, buildProtectedTags=[]) == {("b", "old")}


def test_an_empty_registry_plans_nothing(storage: Storage) -> None:
    assert storage.run("plan") == ""


def test_a_dry_run_reports_what_would_go_and_deletes_nothing(storage: Storage) -> None:
    storage.tag("app", "latest", 100)
    storage.tag("app", "old", 100)
    storage.tag("app", "new", 0)
    report = json.loads(storage.run("now", "--dry-run", buildKeepTags=1, buildKeepDays=0))
    assert report["dryRun"] is True
    assert report["rules"] == {"keepTags": 1, "keepDays": 0, "protected": ["latest"]}
    assert [(e["repository"], e["tag"], e["pushed"]) for e in report["wouldDelete"]] == [
        ("app", "old", "2026-10-07T08:00:00Z")]
    assert {e["tag"] for e in report["kept"]} == {"latest", "new"}
    assert (storage.repositories / "app/_manifests/tags/old/current/link").exists()


def test_untagged_manifests_are_found_but_not_what_a_kept_index_needs(storage: Storage) -> None:
    amd64, arm64 = storage.manifest("app"), storage.manifest("app")
    index = storage.manifest("app", amd64, arm64)
    nested_child = storage.manifest("app")
    outer = storage.manifest("app", storage.manifest("app", nested_child))
    tagged, untagged = storage.manifest("app"), storage.manifest("app")
    storage.tag("app", "v1", digest=index)
    storage.tag("app", "v2", digest=outer)
    storage.tag("app", "build-1", digest=tagged)
    assert storage.untagged() == {("app", untagged)}


def test_an_index_whose_tag_went_takes_its_platform_manifests_along(storage: Storage) -> None:
    child = storage.manifest("team/app")
    index = storage.manifest("team/app", child)
    kept = storage.manifest("team/app")
    storage.tag("team/app", "latest", digest=kept)
    assert storage.untagged() == {("team/app", child), ("team/app", index)}


def test_a_manifest_of_another_repository_is_not_kept_by_a_reference(storage: Storage) -> None:
    # An index only references manifests of its own repository (distribution checks it on push).
    elsewhere = storage.manifest("b")
    storage.tag("a", "latest", digest=storage.manifest("a", elsewhere))
    assert storage.untagged() == {("b", elsewhere)}


# -- the schedule ------------------------------------------------------------------------------

MIDNIGHT = NOW - NOW % DAY


@pytest.mark.parametrize(("schedule", "seconds_after_midnight", "due"), [
    ("03:00", 3 * 3600, True),
    ("03:00", 3 * 3600 + 14 * 60, True),  # a restart at 03:10 still runs it
    ("03:00", 3 * 3600 + 15 * 60, False),
    ("03:00", 3 * 3600 - 60, False),
    ("23:55", 5 * 60, True),  # the slot goes past midnight
    ("08:30", 8 * 3600 + 30 * 60 + 1, True),  # leading zeros are not octal
])
def test_a_daily_time_is_due_in_its_slot(storage: Storage, schedule: str, seconds_after_midnight: int,
                                         due: bool) -> None:
    output = storage.run("due", now=MIDNIGHT + seconds_after_midnight, buildCleanup=schedule)
    assert output.strip() == ("due" if due else "not due")


def test_a_daily_time_runs_once_per_slot(storage: Storage) -> None:
    (storage.root / "state").mkdir()
    (storage.root / "state/last-scheduled").write_text(str(MIDNIGHT + 3 * 3600))
    assert storage.run("due", now=MIDNIGHT + 3 * 3600 + 300).strip() == "not due"
    assert storage.run("due", now=MIDNIGHT + DAY + 3 * 3600).strip() == "due"


# -- the files and routes ---------------------------------------------------------------------


def test_the_read_only_twin_serves_the_same_storage_read_only_on_its_own_ports() -> None:
    twin = json.loads(renderers.registry_config("maintenance", 3))
    build = json.loads(renderers.registry_config("build", 3))
    assert twin["storage"]["maintenance"] == {"readonly": {"enabled": True}}
    assert twin["storage"]["filesystem"] == build["storage"]["filesystem"]
    assert (twin["http"]["addr"], twin["http"]["debug"]["addr"]) == (":5002", ":5003")
    assert "maintenance" not in build["storage"]


def _build_routes(config: dict[str, Any], hostname: str) -> list[dict[str, Any]]:
    route = next(r for r in config["apps"]["http"]["servers"]["registry"]["routes"]
                 if r.get("match") == [{"host": [hostname]}])
    return route["handle"][0]["routes"]


def test_the_front_refuses_writes_during_the_window_and_fails_over_to_the_twin() -> None:
    with_cleanup = settings(buildCleanup="03:00")
    routes = _build_routes(json.loads(renderers.front_config(with_cleanup, [])), with_cleanup.build_hostname)
    refusal = routes[1]
    assert refusal["match"][0]["file"]["try_files"] == ["/registry-stack/maintenance"]
    assert refusal["match"][0]["file"]["root"] == "/registry-data/build"
    assert refusal["match"][0]["not"] == [{"method": ["GET", "HEAD", "OPTIONS"]}]
    answer = refusal["handle"][0]
    assert answer["status_code"] == 405 and "read-only while its maintenance window runs" in answer["body"]
    proxy = routes[-1]["handle"][0]
    assert [u["dial"] for u in proxy["upstreams"]] == [
        "registry-stack-dev-build:5000", "registry-stack-dev-build:5002"]
    assert proxy["load_balancing"]["selection_policy"] == {"policy": "first"}

    plain = settings()
    routes = _build_routes(json.loads(renderers.front_config(plain, [])), plain.build_hostname)
    assert "maintenance" not in json.dumps(routes)
    assert [u["dial"] for u in routes[-1]["handle"][0]["upstreams"]] == ["registry-stack-dev-build:5000"]


def test_the_unified_endpoint_refuses_writes_during_the_window_too() -> None:
    unified = settings(buildCleanup="manual", unifiedEndpoint=True)
    routes = _build_routes(json.loads(renderers.front_config(unified, [])), unified.unified_hostname)
    text = json.dumps(routes)
    assert text.index("/registry-stack/maintenance") < text.index("registry-stack-dev-build:5000")
    assert text.count("registry-stack-dev-build:5002") == 2  # the writes' and the reads' proxy


def test_the_window_waits_for_the_fronts_health_checks() -> None:
    # The writer stops after the front's active check saw the twin, and the twin stops after the
    # writer's passive failures expired and an active check saw it again.
    assert build_cleanup.GRACE_START_SECONDS > renderers.HEALTH_INTERVAL_SECONDS
    assert build_cleanup.GRACE_END_SECONDS > renderers.PASSIVE_FAIL_SECONDS + renderers.HEALTH_INTERVAL_SECONDS
    proxy = renderers._reverse_proxy("a:1", "b:2")
    assert proxy["health_checks"]["active"]["interval"] == f"{renderers.HEALTH_INTERVAL_SECONDS}s"
    assert proxy["health_checks"]["passive"]["fail_duration"] == f"{renderers.PASSIVE_FAIL_SECONDS}s"


def test_on_2x_the_collector_runs_without_delete_untagged_which_loses_index_children() -> None:
    # 2.8.2's --delete-untagged deletes a kept index's platform manifests (the e2e test shows the
    # script's own search keeps them): the script finds the untagged manifests alone there.
    conf = build_cleanup.cleanup_conf(settings(buildCleanup="manual", registryImage="registry:2.8.3"))
    assert "GC_FLAGS=''\n" in conf and "REGISTRY_CONFIG=/etc/docker/registry/config.yml\n" in conf
    assert "SCHEDULE=manual\n" in conf


def _declared_build(**values: Any) -> dict[str, Any]:
    declaration = declare({"users": USERS, **values}, secret_keys={"users"}, stack="dev")
    return declaration.containers["registry-stack-dev-build"].plain_inputs


def test_the_build_container_runs_the_cleanup_only_when_it_is_set() -> None:
    build = _declared_build(buildCleanup="03:00", buildKeepTags=3, buildProtectedTags=["v*"])
    assert (build["entrypoints"], build["command"]) == (["/usr/bin/registry-stack-cleanup"], ["serve"])
    files = {u["file"]: u for u in build["uploads"]}
    assert files["/usr/bin/registry-stack-cleanup"]["executable"] is True
    assert files["/usr/bin/registry-stack-cleanup"]["content"] == build_cleanup.SCRIPT_SOURCE.read_text()
    conf = files["/etc/registry-stack/build-cleanup.conf"]["content"]
    assert "SCHEDULE=03:00\n" in conf and "KEEP_TAGS=3\n" in conf and "PROTECTED='v*'\n" in conf
    assert "REGISTRY_CONFIG=/etc/distribution/config.yml\n" in conf and "GC_FLAGS=--delete-untagged\n" in conf
    twin = json.loads(files["/etc/registry-stack/build-readonly.yml"]["content"])
    assert twin["storage"]["maintenance"]["readonly"]["enabled"] is True
    writer = json.loads(files["/etc/distribution/config.yml"]["content"])
    assert writer["http"]["draintimeout"] == build_cleanup.DRAIN_TIMEOUT
    assert build["healthcheck"]["tests"][0] == "CMD-SHELL" and ":5002/v2/" in build["healthcheck"]["tests"][1]

    plain = _declared_build()
    assert "entrypoints" not in plain and not plain.get("command")
    assert [u["file"] for u in plain["uploads"]] == ["/etc/distribution/config.yml"]
    assert "draintimeout" not in json.loads(plain["uploads"][0]["content"])["http"]
