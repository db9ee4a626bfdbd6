"""Pre-warming: every `pulumi up` pulls the `prewarm` images into their caches; pinned ones stay.

How it runs: like the verification (components/verification.py), a run-to-completion
container on the stack's network, after the verification passed the stack as serving. It
runs components/prewarm_app/prewarm.py with the agent's image (python3, standard library):
each image's manifest, every platform manifest of an index and every blob, through the
cache registry itself, then waits until the cache's storage (mounted read-only) holds them.
A new run id in its env on every program run replaces it, so it runs on every `pulumi up`.

A failed image is not a failed `pulumi up`: the run prints `PREWARM-FAILED <image>: <reason>`,
the program warns with that line (`pulumi.log.warn`) and exports the list as
`prewarmFailures`; the rest of the stack is unaffected.

Pinning: the pinned references of each cache go to `pins.PINS_PATH` in its container
(components/pins.py; the size cap reads its own copy in the agent). A cache with pins starts
through components/prewarm_app/cache_start.sh, which drops pinned entries from the proxy's
TTL scheduler before the registry starts and, when a pinned digest was scheduled again while
it ran, restarts the registry to drop it (see README "Pre-warmed, pinned images" for the limits).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_docker as docker

from . import pins, renderers, verification

if TYPE_CHECKING:
    from .settings import Settings, Upstream

ROLE = "prewarm"
RUN_ENV = "REGISTRY_STACK_PREWARM_RUN"
APP_DIR = Path(__file__).resolve().parent / "prewarm_app"
SCRIPT_PATH = "/opt/registry-stack-prewarm/prewarm.py"
CONFIG_PATH = "/etc/registry-stack/prewarm.json"
# Where the run sees each cache's storage (read-only), to know what the cache has stored.
STORAGE_DIR = "/caches"
# In the cache containers with pins.
CACHE_START_PATH = "/etc/registry-stack/cache-start.sh"
PINS_AWK_PATH = "/etc/registry-stack/pins.awk"
SCHEDULER_STATE = f"{renderers.REGISTRY_DATA_DIR}/scheduler-state.json"
PIN_CHECK_SECONDS = 300
# How often the start script looks whether the registry still runs (it exits with it).
TICK_SECONDS = 5
READY_SECONDS = 60
REQUEST_SECONDS = 120
STORE_SECONDS = 120
FAILED = "PREWARM-FAILED "


def prewarm_config(settings: Settings) -> str:
    """prewarm.json: each cache's URL on the network and storage path, and the images."""
    caches = {
        u.name: {
            "url": f"http://{settings.names.container(u.role)}:{renderers.REGISTRY_PORT}",
            "storage": f"{STORAGE_DIR}/{u.role}",
        }
        for u in settings.caches if any(image.upstream == u.name for image in settings.prewarm)
    }
    images = [
        {"label": i.label, "upstream": i.upstream, "repository": i.repository, "reference": i.manifest_reference}
        for i in settings.prewarm
    ]
    config = {
        "caches": caches, "images": images, "readySeconds": READY_SECONDS,
        "requestSeconds": REQUEST_SECONDS, "storeSeconds": STORE_SECONDS,
    }
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def prewarm_script() -> str:
    return (APP_DIR / "prewarm.py").read_text()


def failures_of(exit_code: int | None, logs: str | None) -> list[str]:
    """The images that were not pre-warmed, each `<upstream>=<reference>: <reason>`."""
    lines = (logs or "").splitlines()
    failures = [line.removeprefix(FAILED) for line in lines if line.startswith(FAILED)]
    if exit_code != 0:
        tail = " | ".join(line for line in lines[-3:] if line.strip()) or "no output"
        failures.append(f"the pre-warm run itself failed (exit status {exit_code}): {tail}")
    return failures


def cache_start_script(
    upstream: Upstream, major: int, check_seconds: int = PIN_CHECK_SECONDS, tick_seconds: int = TICK_SECONDS
) -> str:
    """The pinned cache's start script (prewarm_app/cache_start.sh with this cache's values)."""
    values = {
        "STATE": SCHEDULER_STATE,
        "PINS": pins.PINS_PATH,
        "STORE": f"{renderers.REGISTRY_DATA_DIR}/docker/registry/v2",
        "AWK_SCRIPT": PINS_AWK_PATH,
        "CONFIG": renderers.registry_config_path(major),
        "UPSTREAM": f"{upstream.url}/v2/",
        "CHECK_SECONDS": str(check_seconds),
        "CHECK_ROUNDS": str(max(1, check_seconds // tick_seconds)),
        "TICK_SECONDS": str(tick_seconds),
    }
    text = (APP_DIR / "cache_start.sh").read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    return text


def pins_awk() -> str:
    return (APP_DIR / "pins.awk").read_text()


def cache_files(upstream: Upstream, major: int) -> dict[str, str]:
    """What a cache with pins gets besides its config: the pins file, the strip, the start script."""
    if not upstream.pins:
        return {}
    return {
        pins.PINS_PATH: pins.pins_file(pins.pinned_references(upstream)),
        PINS_AWK_PATH: pins_awk(),
        CACHE_START_PATH: cache_start_script(upstream, major),
    }


def cache_command(upstream: Upstream) -> tuple[list[str], list[str]] | None:
    """(entrypoint, command) of a cache with pins; None keeps the image's own."""
    return (["/bin/sh"], [CACHE_START_PATH]) if upstream.pins else None


def storage_roles(settings: Settings) -> list[str]:
    """The caches the run pre-warms (their storage is mounted into it)."""
    return [u.role for u in settings.caches if any(i.upstream == u.name for i in settings.prewarm)]


class Prewarm:
    """The run-to-completion container and `failures`: an Output of the images not pre-warmed."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        image: docker.RemoteImage,
        network: pulumi.Input[str],
        volumes: Sequence[docker.ContainerVolumeArgs],
        labels: Sequence[docker.ContainerLabelArgs],
        after: Sequence[pulumi.Resource],
        parent: pulumi.Resource,
    ) -> None:
        container_name = settings.names.container(ROLE)
        self.container = verification.run_once_container(
            f"{name}-{ROLE}", container_name, image, network, labels, after, parent, run_env=RUN_ENV,
            command=["python3", SCRIPT_PATH, CONFIG_PATH],
            uploads=[
                docker.ContainerUploadArgs(file=SCRIPT_PATH, content=prewarm_script()),
                docker.ContainerUploadArgs(file=CONFIG_PATH, content=prewarm_config(settings)),
            ],
            volumes=list(volumes),
        )

        def report(values: list[Any]) -> list[str]:
            failures = failures_of(*values)
            for failure in failures:
                pulumi.log.warn(f"pre-warm: {failure}", resource=self.container)
            return failures

        self.failures: pulumi.Output[list[str]] = pulumi.Output.all(
            self.container.exit_code, self.container.container_logs
        ).apply(report)

