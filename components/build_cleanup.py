"""Build-registry cleanup: the files that make the build container run it (pure functions).

With `buildCleanup` set, the build container's entrypoint is `registry-stack-cleanup serve`
(build_cleanup.sh, POSIX sh: the official registry image is Alpine with busybox and has no
python). It runs the registry and, daily at the set UTC time or on demand
(`docker exec <build> registry-stack-cleanup now`), the maintenance window the script's header
describes: pushes are refused with a clear error (renderers._maintenance_routes), pulls are
served by a read-only twin (renderers._build_proxy, "maintenance" config), the tags the
retention rules select are deleted, `garbage-collect --delete-untagged` runs, and a report says
what was deleted and how many bytes came back.

The retention rules live in the script only (one implementation, where the data is), and the
unit tests run that script on real folders (tests/test_build_cleanup.py).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pulumi_docker as docker

from . import renderers
from .settings import Settings

SCRIPT_SOURCE = Path(__file__).resolve().parent / "build_cleanup.sh"
SCRIPT_PATH = "/usr/bin/registry-stack-cleanup"
CONF_PATH = "/etc/registry-stack/build-cleanup.conf"
READONLY_CONFIG_PATH = "/etc/registry-stack/build-readonly.yml"
# Reports persist beside the images; the run folder (pid, requests) does not outlive the container.
STATE_DIR = f"{renderers.REGISTRY_DATA_DIR}/registry-stack/cleanup"
RUN_DIR = "/tmp/registry-stack-cleanup"
# A daily time is still caught this many minutes late (the container was restarting, say).
SLOT_MINUTES = 15
# The writer finishes the requests it serves before it stops (short of `docker stop`'s 10 s).
DRAIN_TIMEOUT = "5s"
# How long `registry-stack-cleanup now` waits for the window's report.
NOW_TIMEOUT_SECONDS = 3600
# The front's health check must see the read-only twin answer before the writer stops, and the
# writer answer again (and its passive failures expire) before the twin stops.
GRACE_START_SECONDS = renderers.HEALTH_INTERVAL_SECONDS + 1
GRACE_END_SECONDS = renderers.PASSIVE_FAIL_SECONDS + renderers.HEALTH_INTERVAL_SECONDS + 1


def gc_flags(major_version: int) -> str:
    """`--delete-untagged` on 3.x, whose collector keeps what a kept index references
    (garbagecollect.go unmarkReferencedManifest); 2.8.2's deletes that (measured, issue 3178), so
    on 2.x the script's own search of untagged manifests (which has that check) does it alone."""
    return "--delete-untagged" if major_version >= 3 else ""


def script() -> str:
    return SCRIPT_SOURCE.read_text()


def cleanup_conf(settings: Settings) -> str:
    """build-cleanup.conf: shell assignments the script sources (every value quoted)."""
    cleanup = settings.cleanup
    values = {
        "SCHEDULE": cleanup.daily_time or "manual",
        "KEEP_TAGS": str(cleanup.keep_tags),
        "KEEP_DAYS": str(cleanup.keep_days),
        "PROTECTED": " ".join(cleanup.protected),
        "DATA_DIR": renderers.REGISTRY_DATA_DIR,
        "STATE_DIR": STATE_DIR,
        "RUN_DIR": RUN_DIR,
        "MARKER": f"{renderers.REGISTRY_DATA_DIR}/{renderers.MAINTENANCE_MARKER}",
        "REGISTRY_CONFIG": renderers.registry_config_path(settings.registry_major_version),
        "GC_FLAGS": gc_flags(settings.registry_major_version),
        "READONLY_CONFIG": READONLY_CONFIG_PATH,
        "PORT": str(renderers.REGISTRY_PORT),
        "READONLY_PORT": str(renderers.MAINTENANCE_PORT),
        "GRACE_START": str(GRACE_START_SECONDS),
        "GRACE_END": str(GRACE_END_SECONDS),
        "SLOT_MINUTES": str(SLOT_MINUTES),
        "NOW_TIMEOUT": str(NOW_TIMEOUT_SECONDS),
    }
    lines = [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    return "# Rendered by registry-stack (components/build_cleanup.py) from the buildCleanup keys.\n" + "\n".join(
        lines
    ) + "\n"


def build_uploads(settings: Settings) -> list[docker.ContainerUploadArgs]:
    """The script, its settings and the read-only twin's config, for the build container."""
    major = settings.registry_major_version
    return [
        docker.ContainerUploadArgs(file=SCRIPT_PATH, content=script(), executable=True),
        docker.ContainerUploadArgs(file=CONF_PATH, content=cleanup_conf(settings)),
        docker.ContainerUploadArgs(
            file=READONLY_CONFIG_PATH, content=renderers.registry_config("maintenance", major)
        ),
    ]


def entrypoint() -> list[str]:
    return [SCRIPT_PATH]


def command() -> list[str]:
    return ["serve"]


def healthcheck_command() -> list[str]:
    """Healthy while the writer or, during a window, its read-only twin answers."""
    urls = [f"http://127.0.0.1:{port}/v2/" for port in (renderers.REGISTRY_PORT, renderers.MAINTENANCE_PORT)]
    return ["CMD-SHELL", " || ".join(f"wget -q -O /dev/null {url}" for url in urls)]
