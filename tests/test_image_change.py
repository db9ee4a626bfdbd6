"""A new registryImage or frontImage shows in `pulumi preview` as the replacement of its containers.

pulumi/pulumi-docker#293: when a RemoteImage is updated in place, the preview keeps its old
image ID, so the containers that use it look unchanged, and only `pulumi up` replaces them.
The stand-in below plays the engine and the docker provider for a preview that follows an
earlier `pulumi up`, as they decide each step (pulumi/pulumi
pkg/resource/deploy/step_generator.go; the bridged provider's plan):

- inputs unchanged: the resource keeps its state;
- a changed input that forces a new resource (the provider's ForceNew, or the program's
  `replace_on_changes`): replace, and in a preview the new resource's computed outputs are
  unknown until it exists;
- any other change: update in place, and computed outputs keep their old values in the
  preview (the docker provider marks no computed attribute of docker_image as changing:
  kreuzwerker internal/provider/resource_docker_image.go has no CustomizeDiff).

The container's `image` forces a new container (kreuzwerker resource_docker_container.go:
`ForceNew: true`), so a container whose `image` input is new or unknown in the preview is
shown as replaced. Whether RemoteImage's `name` itself is ForceNew differs between provider
versions (it is not in the version #293 was filed against); the program must not depend on
it, so both are tested.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pytest
from pulumi.output import Unknown
from pulumi.runtime import rpc

from tests import harness
from tests.harness import Declaration, declare

PASSWORD = "Ci-Pa55word-7f3a"
CONTAINER = "docker:index/container:Container"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
IMAGE_OUTPUTS = ("imageId", "repoDigest")
BASE = {"users": [f"ci:{PASSWORD}"], "upstreams": ["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io"]}
REGISTRY_ROLES = {"build", "cache", "cache-standby", "ghcr-cache", "ghcr-cache-standby"}


class RecordingMocks(harness.Mocks):
    """`pulumi up`: the deterministic fakes, with every resource's outputs kept as its state."""

    def __init__(self) -> None:
        self.state: dict[tuple[str, str], dict[str, Any]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        resource_id, outputs = super().new_resource(args)
        self.state[(args.typ, args.name)] = outputs
        return resource_id, outputs


@dataclass
class PreviewAfterUp(pulumi.runtime.Mocks):
    """`pulumi preview` against the state of an earlier run (see the module docstring)."""

    state: dict[tuple[str, str], dict[str, Any]]
    name_forces_new: bool
    """Whether the provider itself replaces a RemoteImage whose name changed."""
    honour_replace_on_changes: bool = True
    """False models a program that does not ask for replacement (the #293 situation)."""
    steps: dict[str, str] = field(default_factory=dict)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        old = self.state[(args.typ, args.name)]
        changed = {key for key, value in args.inputs.items() if _differs(value, old.get(key))}
        if not changed:
            self.steps[args.name] = "same"
            return f"{args.name}-id", old
        if changed & self._forces_new(args):
            self.steps[args.name] = "replace"
            computed = {key: rpc.UNKNOWN for key in IMAGE_OUTPUTS} if args.typ == REMOTE_IMAGE else {}
            return "", {**args.inputs, **computed}
        self.steps[args.name] = "update"
        return f"{args.name}-id", {**old, **args.inputs}

    def _forces_new(self, args: pulumi.runtime.MockResourceArgs) -> set[str]:
        if args.typ == CONTAINER:
            return {"image", "name", "uploads", "labels", "networksAdvanced", "volumes", "ports", "command"}
        if args.typ == REMOTE_IMAGE:
            forced = self._replace_on_changes(args) if self.honour_replace_on_changes else set()
            return forced | ({"name"} if self.name_forces_new else set())
        return set()

    @staticmethod
    def _replace_on_changes(args: pulumi.runtime.MockResourceArgs) -> set[str]:
        # The options the program registered the resource with, as harness.CapturingMonitor
        # recorded them (registrations run on several threads: find this one by name).
        monitor = pulumi.runtime.settings.get_monitor()
        registered = next(r for r in monitor.registrations if (r.type, r.name) == (args.typ, args.name))
        return set(registered.options["replaceOnChanges"])

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list | None]:
        return {}, None


def _differs(new: Any, old: Any) -> bool:
    if _has_unknown(new):
        return True
    return harness.unwrap(harness.wrap_secrets(new)) != harness.unwrap(harness.wrap_secrets(old))


def _has_unknown(value: Any) -> bool:
    if isinstance(value, Unknown) or value == rpc.UNKNOWN:
        return True
    if isinstance(value, dict):
        return any(_has_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_unknown(v) for v in value)
    return False


@dataclass
class Change:
    before: Declaration
    after: Declaration
    preview: PreviewAfterUp

    def image_inputs(self, declaration: Declaration) -> dict[str, Any]:
        return {
            r.name.removeprefix("registry-"): r.inputs.get("image")
            for r in declaration.of_type(CONTAINER)
        }

    @property
    def containers_with_a_new_image(self) -> set[str]:
        before, after = self.image_inputs(self.before), self.image_inputs(self.after)
        return {role for role, image in after.items() if _differs(image, before[role])}


def preview_change(change: dict[str, Any], *, name_forces_new: bool, honour: bool = True) -> Change:
    up = RecordingMocks()
    before = declare(BASE, secret_keys=("users",), mocks=up)
    preview = PreviewAfterUp(up.state, name_forces_new=name_forces_new, honour_replace_on_changes=honour)
    after = declare({**BASE, **change}, secret_keys=("users",), preview=True, mocks=preview)
    return Change(before, after, preview)


@pytest.mark.parametrize("name_forces_new", [False, True], ids=["name-updates", "name-forces-new"])
def test_a_new_registry_image_replaces_every_registry_container_in_the_preview(name_forces_new: bool) -> None:
    change = preview_change({"registryImage": "registry:2.8.4"}, name_forces_new=name_forces_new)
    assert change.preview.steps["registry-registry-image"] == "replace"
    assert change.preview.steps["registry-front-image"] == "same"
    # The verification (components/verification.py) runs in the registry image too.
    assert change.containers_with_a_new_image == REGISTRY_ROLES | {"verify"}
    assert {role for role in REGISTRY_ROLES if change.preview.steps[f"registry-{role}"] == "replace"} == REGISTRY_ROLES


@pytest.mark.parametrize("name_forces_new", [False, True], ids=["name-updates", "name-forces-new"])
def test_a_new_front_image_replaces_the_front_only(name_forces_new: bool) -> None:
    change = preview_change({"frontImage": "caddy:2.8.5"}, name_forces_new=name_forces_new)
    assert change.containers_with_a_new_image == {"front"}
    assert change.preview.steps["registry-front"] == "replace"
    assert all(change.preview.steps[f"registry-{role}"] == "same" for role in REGISTRY_ROLES)


def test_the_stand_in_shows_issue_293_without_replace_on_changes() -> None:
    # The stand-in is not built to pass: a program that lets the image update in place gets
    # the preview #293 describes, with no container changed.
    change = preview_change({"registryImage": "registry:2.8.4"}, name_forces_new=False, honour=False)
    assert change.preview.steps["registry-registry-image"] == "update"
    assert change.containers_with_a_new_image == set()


def test_unchanged_config_changes_nothing() -> None:
    change = preview_change({}, name_forces_new=False)
    assert set(change.preview.steps.values()) == {"same"}
