"""Local stand-ins for the registry, caddy and pebble images, built from Debian binaries.

Nothing can be pulled here, so each image is a `docker import` of a folder holding one
Debian binary, the libraries `ldd` lists, busybox (for the `wget` health checks the
program declares, as the Alpine-based official images have) and the CA bundle.

An image is rebuilt only when its recipe or binary changed (a content hash in its tag's
label), so the whole e2e run builds each image once.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

BUSYBOX = "/bin/busybox"
BUSYBOX_APPLETS = ("sh", "wget", "cat", "ls", "sleep", "kill")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
RECIPE_LABEL = "registry-stack.recipe"


@dataclass(frozen=True)
class LocalImage:
    tag: str
    binary: str
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    dirs: tuple[str, ...] = ()
    debian_package: str = ""


REGISTRY = LocalImage(
    tag="registry-stack-local/registry:2.8.2",
    binary="/usr/bin/docker-registry",
    # Same contract as the official image: the config path is the command.
    entrypoint=["/usr/bin/docker-registry", "serve"],
    cmd=["/etc/docker/registry/config.yml"],
    dirs=("/var/lib/registry", "/etc/docker/registry", "/tmp"),
    debian_package="docker-registry",
)
CADDY = LocalImage(
    tag="registry-stack-local/caddy:2.6.2",
    binary="/usr/bin/caddy",
    entrypoint=[],
    cmd=["caddy", "run", "--config", "/etc/caddy/caddy.json"],
    env={"XDG_CONFIG_HOME": "/config", "XDG_DATA_HOME": "/data"},
    dirs=("/config", "/data", "/etc/caddy", "/tmp"),
    debian_package="caddy",
)
PEBBLE = LocalImage(
    tag="registry-stack-local/pebble:2.4.0",
    binary="/usr/bin/pebble",
    entrypoint=["/usr/bin/pebble"],
    cmd=["-config", "/etc/pebble/pebble-config.json"],
    dirs=("/etc/pebble", "/tmp"),
    debian_package="pebble",
)
ALL_IMAGES = (REGISTRY, CADDY, PEBBLE)


def shared_libraries(binary: str) -> list[str]:
    """Absolute paths of the libraries a dynamically linked binary loads (from ldd)."""
    result = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    if result.returncode != 0:  # statically linked
        return []
    paths = []
    for line in result.stdout.splitlines():
        parts = line.split()
        for part in parts:
            if part.startswith("/") and os.path.exists(part):
                paths.append(part)
    return sorted(set(paths))


def _add_file(archive: tarfile.TarFile, source: str, target: str | None = None) -> None:
    target = (target or source).lstrip("/")
    real = os.path.realpath(source)
    info = archive.gettarinfo(real, arcname=target)
    with open(real, "rb") as handle:
        archive.addfile(info, handle)


def _add_dir(archive: tarfile.TarFile, path: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type = tarfile.DIRTYPE
    info.mode = mode
    archive.addfile(info)


def _add_symlink(archive: tarfile.TarFile, path: str, target: str) -> None:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type = tarfile.SYMTYPE
    info.linkname = target
    archive.addfile(info)


def root_filesystem(image: LocalImage) -> bytes:
    """A tar of the image's root filesystem."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for folder in ("/bin", "/usr", "/usr/bin", "/etc", "/etc/ssl", "/etc/ssl/certs", *image.dirs):
            _add_dir(archive, folder, 0o1777 if folder == "/tmp" else 0o755)
        _add_file(archive, image.binary)
        for library in shared_libraries(image.binary):
            _add_file(archive, library)
        _add_file(archive, BUSYBOX)
        for applet in BUSYBOX_APPLETS:
            _add_symlink(archive, f"/bin/{applet}", "busybox")
        _add_file(archive, CA_BUNDLE)
    return buffer.getvalue()


def recipe_hash(image: LocalImage) -> str:
    digest = hashlib.sha256(json.dumps(image.__dict__, sort_keys=True, default=list).encode())
    for path in (image.binary, BUSYBOX, *shared_libraries(image.binary)):
        digest.update(Path(os.path.realpath(path)).read_bytes())
    return digest.hexdigest()[:16]


def _existing_recipe(tag: str) -> str:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", tag],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        return ""
    labels = json.loads(result.stdout.strip() or "null") or {}
    return labels.get(RECIPE_LABEL, "")


def build(image: LocalImage) -> str:
    """Build the image unless an identical one exists; returns its tag."""
    missing = [path for path in (image.binary, BUSYBOX, CA_BUNDLE) if not os.path.exists(path)]
    if missing:
        package = image.debian_package or "the package"
        raise RuntimeError(
            f"cannot build {image.tag}: {', '.join(missing)} missing; "
            f"apt-get install {package} busybox-static ca-certificates"
        )
    recipe = recipe_hash(image)
    if _existing_recipe(image.tag) == recipe:
        return image.tag
    changes = [
        f"LABEL {RECIPE_LABEL}={recipe}",
        "ENV PATH=/usr/bin:/bin",
        f"CMD {json.dumps(image.cmd)}",
    ]
    if image.entrypoint:
        changes.append(f"ENTRYPOINT {json.dumps(image.entrypoint)}")
    changes += [f"ENV {key}={value}" for key, value in image.env.items()]
    command = ["docker", "import"]
    for change in changes:
        command += ["-c", change]
    command += ["-", image.tag]
    subprocess.run(command, input=root_filesystem(image), check=True, capture_output=True)
    return image.tag


def build_all() -> dict[str, str]:
    if shutil.which("docker") is None:
        raise RuntimeError("the docker CLI is missing: apt-get install docker.io")
    return {image.tag.split("/")[1].split(":")[0]: build(image) for image in ALL_IMAGES}


if __name__ == "__main__":
    for name, tag in build_all().items():
        print(f"{name}: {tag}")
