"""Local stand-ins for the registry, caddy and pebble images, built from Debian binaries.

Nothing can be pulled here, so each image is a `docker import` of a folder holding one
Debian binary, the libraries `ldd` lists, busybox (for the `wget` health checks the
program declares, as the Alpine-based official images have) and the CA bundle.

A binary newer than bookworm's (caddy from sid) is fetched with a private apt configuration
(sources, lists and cache under PRIVATE_APT_DIR, never the machine's own apt state) and
unpacked with `dpkg -x`, as ../shared/reference/platform.md describes: installing trixie or sid
packages onto the machine itself would partially upgrade its libc.

An image is rebuilt only when its recipe or binary changed (a content hash in its tag's
label), so the whole e2e run builds each image once.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BUSYBOX = "/bin/busybox"
# awk and mv: the start script of a cache with pinned images (components/prewarm_app); mkdir, rm,
# cmp and grep: the start script of a front that copies certificates (components/tls_share.py).
# The official (Alpine) registry and caddy images' busybox has them all.
BUSYBOX_APPLETS = ("sh", "wget", "cat", "ls", "sleep", "kill", "awk", "mv", "mkdir", "rm", "cmp", "grep")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
RECIPE_LABEL = "registry-stack.recipe"
PRIVATE_APT_DIR = Path(os.environ.get("REGISTRY_STACK_APT_DIR", "/var/cache/registry-stack/apt"))
APT_LISTS_MAX_AGE_S = 24 * 3600


@dataclass(frozen=True)
class LocalImage:
    tag: str
    binary: str
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    dirs: tuple[str, ...] = ()
    debian_package: str = ""
    # "" takes `binary` from the machine's own package; a suite name ("sid") fetches the
    # package from that suite with the private apt configuration and takes `binary` from it.
    debian_suite: str = ""
    # The fetched binary must report at least this version (`<binary> version`): tests depend
    # on "a current Caddy", not on the exact version sid happens to carry today.
    min_version: tuple[int, ...] = ()
    # Folders copied whole (an interpreter's standard library), minus `skip` names, and
    # symlinks (path, target) such as python3 -> python3.11.
    trees: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    links: tuple[tuple[str, str], ...] = ()


REGISTRY = LocalImage(
    tag="registry-stack-local/registry:2.8.2",
    binary="/usr/bin/docker-registry",
    # Same contract as the official image: the config path is the command.
    entrypoint=["/usr/bin/docker-registry", "serve"],
    cmd=["/etc/docker/registry/config.yml"],
    dirs=("/var/lib/registry", "/etc/docker/registry", "/tmp"),
    debian_package="docker-registry",
)
# A current Caddy (sid: 2.11.x, a static Go binary that runs on bookworm as it is), the
# version line the program's default frontImage pins.
CADDY = LocalImage(
    tag="registry-stack-local/caddy:2-sid",
    binary="/usr/bin/caddy",
    entrypoint=[],
    cmd=["caddy", "run", "--config", "/etc/caddy/caddy.json"],
    env={"XDG_CONFIG_HOME": "/config", "XDG_DATA_HOME": "/data"},
    dirs=("/config", "/data", "/etc/caddy", "/tmp"),
    debian_package="caddy",
    debian_suite="sid",
    min_version=(2, 10),
)
PEBBLE = LocalImage(
    tag="registry-stack-local/pebble:2.4.0",
    binary="/usr/bin/pebble",
    entrypoint=["/usr/bin/pebble"],
    cmd=["-config", "/etc/pebble/pebble-config.json"],
    dirs=("/etc/pebble", "/tmp"),
    debian_package="pebble",
)
# The agent's stand-in for the official python image (python3 on PATH, standard library
# only): Debian's interpreter with its standard library, without tests, tools and GUI bits.
PYTHON = LocalImage(
    tag="registry-stack-local/python:3.11",
    binary="/usr/bin/python3.11",
    entrypoint=[],
    cmd=["python3"],
    dirs=("/tmp", "/opt"),
    debian_package="python3.11",
    trees=("/usr/lib/python3.11",),
    skip=(
        "test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "pydoc_data", "distutils",
        "config-3.11-x86_64-linux-gnu", "__pycache__", "sitecustomize.py", "EXTERNALLY-MANAGED",
    ),
    links=(("/usr/bin/python3", "python3.11"),),
)
ALL_IMAGES = (REGISTRY, CADDY, PEBBLE, PYTHON)

# An S3-compatible store for the build registry's `s3` driver in the swarm tests: moto's server
# mode (PyPI), pinned, in the same Debian python as PYTHON. Chosen over Ceph's radosgw (in
# Debian) because radosgw needs a RADOS cluster (monitor + OSDs) behind it, or its experimental
# dbstore backend; moto is one process that keeps the objects in memory and starts in a second.
# Only the S3 backend and the server's own dependencies (Flask, flask-cors) are installed.
MOTO_VERSION = "5.2.5"
MOTO_PACKAGES = (f"moto[s3]=={MOTO_VERSION}", "flask", "flask-cors")
MOTO_SITE = Path(os.environ.get("REGISTRY_STACK_MOTO_DIR", f"/var/cache/registry-stack/moto-{MOTO_VERSION}"))
MOTO_PORT = 5000
MOTO = LocalImage(
    tag=f"registry-stack-local/moto:{MOTO_VERSION}",
    binary="/usr/bin/python3.11",
    entrypoint=[],
    cmd=["python3", "-m", "moto.server", "-H", "0.0.0.0", "-p", str(MOTO_PORT)],
    env={"PYTHONPATH": str(MOTO_SITE)},
    dirs=("/tmp",),
    debian_package="python3.11",
    trees=("/usr/lib/python3.11", str(MOTO_SITE)),
    skip=PYTHON.skip,
    links=PYTHON.links,
)


@dataclass(frozen=True)
class RootfsImage:
    """A whole Debian root (debootstrap minbase + packages), for a program that needs more than
    one binary: varnishd compiles its VCL with the C compiler at run time (gcc, binutils and
    libc6-dev are dependencies of Debian's varnish package), as the official varnish image has."""

    tag: str
    suite: str
    packages: tuple[str, ...]
    cmd: list[str]
    prune: tuple[str, ...] = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info",
                              "var/cache/apt", "var/lib/apt/lists")


# Varnish Cache 7.7 from trixie (Debian stable, security-supported), the version line the
# program's default herdImage (varnish:7.7) pins.
VARNISH = RootfsImage(
    tag="registry-stack-local/varnish:7-trixie",
    suite="trixie",
    packages=("varnish",),
    cmd=["varnishd", "-V"],
)
ROOTFS_IMAGES = (VARNISH,)
ROOTFS_DIR = Path(os.environ.get("REGISTRY_STACK_ROOTFS_DIR", "/var/cache/registry-stack/rootfs"))


def _rootfs_recipe(image: RootfsImage) -> str:
    return hashlib.sha256(json.dumps(image.__dict__, sort_keys=True, default=list).encode()).hexdigest()[:16]


def build_rootfs(image: RootfsImage) -> str:
    """debootstrap the root once (kept under ROOTFS_DIR, ~2 min), then `docker import` it."""
    recipe = _rootfs_recipe(image)
    if _existing_recipe(image.tag) == recipe:
        return image.tag
    if shutil.which("debootstrap") is None:
        raise RuntimeError(f"cannot build {image.tag}: debootstrap missing; apt-get install debootstrap")
    root = ROOTFS_DIR / f"{image.tag.rsplit('/', 1)[-1].replace(':', '-')}-{recipe}"
    if not root.exists():
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(image.packages)}", image.suite,
             str(partial), _debian_mirror()],
            check=True, capture_output=True,
        )
        for folder in image.prune:
            shutil.rmtree(partial / folder, ignore_errors=True)
        partial.rename(root)
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(
        ["docker", "import", "-c", f"LABEL {RECIPE_LABEL}={recipe}", "-c", f"CMD {json.dumps(image.cmd)}",
         "-", image.tag],
        stdin=tar.stdout, check=True, capture_output=True,
    )
    if tar.wait() != 0:
        raise RuntimeError(f"tar of {root} failed")
    return image.tag


# -- packages from newer Debian suites, without touching the machine's apt -------------------


def _debian_mirror() -> str:
    """The mirror the machine's own apt uses (first URIs: of debian.sources, or sources.list)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb":
                return parts[1]
    raise RuntimeError("no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list")


def _apt_options(suite: str) -> list[str]:
    root = PRIVATE_APT_DIR / suite
    return [
        "-o", f"Dir::Etc::SourceList={root / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={root / 'lists'}", "-o", f"Dir::Cache={root / 'cache'}",
    ]


def _private_apt_update(suite: str) -> bool:
    """Refresh the suite's package lists once a day; True when they were refreshed now."""
    root = PRIVATE_APT_DIR / suite
    for folder in (root / "lists" / "partial", root / "cache" / "archives" / "partial"):
        folder.mkdir(parents=True, exist_ok=True)
    (root / "sources.list").write_text(f"deb {_debian_mirror()} {suite} main\n")
    stamp = root / "updated"
    if stamp.exists() and time.time() - stamp.stat().st_mtime < APT_LISTS_MAX_AGE_S:
        return False
    subprocess.run(["apt-get", *_apt_options(suite), "-qq", "update"], check=True, capture_output=True)
    stamp.touch()
    return True


def fetch_package(package: str, suite: str) -> Path:
    """Unpack the suite's current `package` (dpkg -x) into a folder of its own; returns it.

    The .deb is downloaded again only when the lists were refreshed (at most once a day)."""
    refreshed = _private_apt_update(suite)
    root = PRIVATE_APT_DIR / suite
    downloads = root / "debs"
    downloads.mkdir(exist_ok=True)
    debs = glob.glob(str(downloads / f"{package}_*.deb"))
    if refreshed or len(debs) != 1:
        for old in debs:
            os.unlink(old)
        subprocess.run(["apt-get", *_apt_options(suite), "-qq", "download", package],
                       cwd=downloads, check=True, capture_output=True)
    (deb,) = glob.glob(str(downloads / f"{package}_*.deb"))
    unpacked = root / "unpacked" / Path(deb).stem
    if not unpacked.exists():
        partial = unpacked.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", deb, str(partial)], check=True)
        partial.rename(unpacked)
    return unpacked


def binary_version(binary: str) -> tuple[int, ...]:
    result = subprocess.run([binary, "version"], capture_output=True, text=True, check=True)
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", result.stdout)
    if not match:
        raise RuntimeError(f"{binary} version printed no version: {result.stdout!r}")
    return tuple(int(part) for part in match.groups())


def source_binary(image: LocalImage) -> str:
    """The file that becomes the image's `binary`: the machine's own, or fetched from the suite."""
    if not image.debian_suite:
        return image.binary
    binary = str(fetch_package(image.debian_package, image.debian_suite) / image.binary.lstrip("/"))
    version = binary_version(binary)
    if image.min_version and version < image.min_version:
        raise RuntimeError(
            f"{image.debian_package} from {image.debian_suite} is {version}, older than {image.min_version}"
        )
    return binary


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


def tree_files(image: LocalImage) -> list[str]:
    """Every regular file under the image's trees, without the skipped names."""
    files = []
    for tree in image.trees:
        for folder, subfolders, names in os.walk(tree):
            subfolders[:] = sorted(d for d in subfolders if d not in image.skip)
            files.extend(os.path.join(folder, n) for n in sorted(names) if n not in image.skip)
    return [f for f in files if os.path.isfile(f)]


def root_filesystem(image: LocalImage, source: str = "") -> bytes:
    """A tar of the image's root filesystem; `source` is the file copied to `image.binary`."""
    source = source or image.binary
    buffer = io.BytesIO()
    extra = tree_files(image)
    libraries = set(shared_libraries(source))
    for path in extra:
        if path.endswith(".so"):
            libraries.update(shared_libraries(path))
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for folder in ("/bin", "/usr", "/usr/bin", "/etc", "/etc/ssl", "/etc/ssl/certs", *image.dirs):
            _add_dir(archive, folder, 0o1777 if folder == "/tmp" else 0o755)
        _add_file(archive, source, image.binary)
        for library in sorted(libraries):
            _add_file(archive, library)
        for path in extra:
            _add_file(archive, path)
        for link, target in image.links:
            _add_symlink(archive, link, target)
        _add_file(archive, BUSYBOX)
        for applet in BUSYBOX_APPLETS:
            _add_symlink(archive, f"/bin/{applet}", "busybox")
        _add_file(archive, CA_BUNDLE)
    return buffer.getvalue()


def recipe_hash(image: LocalImage, source: str = "") -> str:
    source = source or image.binary
    digest = hashlib.sha256(json.dumps(image.__dict__, sort_keys=True, default=list).encode())
    digest.update(" ".join(BUSYBOX_APPLETS).encode())  # a new applet is a new image
    for path in (source, BUSYBOX, *shared_libraries(source), *tree_files(image)):
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
    source = source_binary(image)
    missing = [path for path in (source, BUSYBOX, CA_BUNDLE) if not os.path.exists(path)]
    if missing:
        package = image.debian_package or "the package"
        raise RuntimeError(
            f"cannot build {image.tag}: {', '.join(missing)} missing; "
            f"apt-get install {package} busybox-static ca-certificates"
        )
    recipe = recipe_hash(image, source)
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
    subprocess.run(command, input=root_filesystem(image, source), check=True, capture_output=True)
    return image.tag


def install_moto() -> None:
    """pip-install moto's server once into MOTO_SITE (wheels for CPython 3.11, the image's python)."""
    if (MOTO_SITE / "moto" / "server.py").exists():
        return
    partial = MOTO_SITE.with_name(MOTO_SITE.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--only-binary", ":all:",
         "--python-version", "3.11", "--implementation", "cp", "--target", str(partial), *MOTO_PACKAGES],
        check=True, capture_output=True,
    )
    partial.rename(MOTO_SITE)


def build_moto() -> str:
    install_moto()
    return build(MOTO)


def build_all() -> dict[str, str]:
    if shutil.which("docker") is None:
        raise RuntimeError("the docker CLI is missing: apt-get install docker.io")
    built = {image.tag.split("/")[1].split(":")[0]: build(image) for image in ALL_IMAGES}
    built.update({image.tag.split("/")[1].split(":")[0]: build_rootfs(image) for image in ROOTFS_IMAGES})
    return built


if __name__ == "__main__":
    for name, tag in build_all().items():
        print(f"{name}: {tag}")
