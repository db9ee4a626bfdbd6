"""A test bed of real hosts: Debian trixie and sid machines with their own engines, as containers.

DaemonMirror must work on the hosts users run (Docker 26 to 29, containerd 2, podman 5),
not only on this machine's dockerd 20.10. Nothing can be pulled here, so each host image
is made from Debian's own packages with `debootstrap` and `docker import`
(shared/reference/platform.md, "Real, current Docker hosts as containers"):

- `registry-stack-local/host:sid`: Docker 28, containerd 2, podman 5 (one image for every
  sid host: the role a host plays is chosen when it boots);
- `registry-stack-local/host:trixie`: Docker 26, containerd 1.7.

Like the local images (tests/e2e/images.py), an image is rebuilt only when its recipe
changed: the content hash of the package list and the recipe files (host_recipe/) is the
image's `registry-stack.recipe` label. The two images build in parallel, and the packages
debootstrap downloads are kept in DEB_CACHE for the next build.

A host is a near-privileged container (`--privileged` fails on these machines: the VM lacks
CAP_SYS_RESOURCE) on the stack's network, with its own address there, its own sshd
(root and a sudoer `deploy`, key logins only, fresh host keys) and, by role, its own dockerd
or containerd. The real upstreams' names resolve to 127.0.0.1 on every host, so an image
can reach a host only through the stack's cache. Tests reach hosts only at their address
on that network (SSH) and through `docker exec`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from testbed import images

RECIPE_DIR = Path(__file__).resolve().parent / "host_recipe"
SETUP_SCRIPT = RECIPE_DIR / "setup.sh"
BOOT_SCRIPT = RECIPE_DIR / "boot.sh"
BOOT_PATH = "/usr/local/sbin/registry-stack-host-boot"
READY_FILE = "/run/registry-stack-host.ready"
DEB_CACHE = Path("/var/cache/registry-stack/debootstrap")
BUILD_LOCK = Path("/tmp/registry-stack-e2e-host-build.lock")
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Volumes: an engine's storage cannot live on the container's own overlay filesystem.
ENGINE_VOLUMES = ("/var/lib/docker", "/var/lib/containerd", "/var/lib/containers")
HOST_LABEL = "registry-stack.e2e-host"

BASE_PACKAGES = (
    "docker.io", "docker-cli", "containerd", "runc", "iptables", "openssh-server", "python3", "sudo",
    "ca-certificates", "curl", "procps", "iproute2", "kmod", "xz-utils", "busybox-static",
)


@dataclass(frozen=True)
class HostImage:
    """One debootstrapped Debian suite, imported as an image."""

    suite: str
    packages: tuple[str, ...]

    @property
    def tag(self) -> str:
        return f"registry-stack-local/host:{self.suite}"


# sid's docker.io only recommends docker-cli, so it is listed; podman needs nftables for
# its bridge networks (not used here, but a real podman host has them).
SID = HostImage("sid", (*BASE_PACKAGES, "podman", "nftables"))
TRIXIE = HostImage("trixie", BASE_PACKAGES)
HOST_IMAGES = (SID, TRIXIE)


def recipe_hash(image: HostImage) -> str:
    """What the image is made of: suite, packages and the recipe files (not the day's sid)."""
    digest = hashlib.sha256(json.dumps({"suite": image.suite, "packages": sorted(image.packages)}).encode())
    for path in (SETUP_SCRIPT, BOOT_SCRIPT):
        digest.update(path.read_bytes())
    digest.update(_build_source())
    return digest.hexdigest()[:16]


def _build_source() -> bytes:
    """The parts of this module that decide an image's content (not the test-side helpers)."""
    return json.dumps({"volumes": ENGINE_VOLUMES, "boot": BOOT_PATH, "variant": "minbase"}).encode()


def debian_mirror() -> str:
    """The mirror this machine's own apt uses (platform.md: trixie and sid are served there too)."""
    with contextlib.suppress(OSError):
        for line in APT_SOURCES.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return DEFAULT_MIRROR


def _debootstrap(image: HostImage, root: Path) -> None:
    cache = DEB_CACHE / image.suite
    cache.mkdir(parents=True, exist_ok=True)
    command = [
        "debootstrap", "--variant=minbase", f"--include={','.join(image.packages)}",
        f"--cache-dir={cache}", image.suite, str(root), debian_mirror(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        log = (root / "debootstrap" / "debootstrap.log")
        details = log.read_text()[-3000:] if log.exists() else result.stdout[-3000:]
        raise RuntimeError(f"debootstrap {image.suite} failed ({result.returncode}):\n{result.stderr}\n{details}")


def _finish_root(root: Path) -> None:
    shutil.copy(SETUP_SCRIPT, root / "setup.sh")
    try:
        subprocess.run(["chroot", str(root), "/bin/sh", "/setup.sh"], check=True, capture_output=True, text=True)
    finally:
        (root / "setup.sh").unlink(missing_ok=True)
    boot = root / BOOT_PATH.lstrip("/")
    boot.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(BOOT_SCRIPT, boot)
    boot.chmod(0o755)


def build_image(image: HostImage) -> str:
    """Build the image unless one with the same recipe exists; returns its tag."""
    recipe = recipe_hash(image)
    if images._existing_recipe(image.tag) == recipe:
        return image.tag
    if shutil.which("debootstrap") is None:
        raise RuntimeError("cannot build the e2e hosts: debootstrap is missing; run scripts/install-test-deps")
    root = Path(tempfile.mkdtemp(prefix=f"registry-stack-host-{image.suite}-", dir="/var/tmp"))
    try:
        _debootstrap(image, root)
        _finish_root(root)
        changes = [
            f"LABEL {images.RECIPE_LABEL}={recipe}",
            f"VOLUME {json.dumps(list(ENGINE_VOLUMES))}",
            f"CMD {json.dumps([BOOT_PATH, 'none'])}",
        ]
        command = ["docker", "import"]
        for change in changes:
            command += ["-c", change]
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run([*command, "-", image.tag], stdin=tar.stdout, check=True, capture_output=True)
        if tar.wait() != 0:
            raise RuntimeError(f"tar of {root} failed")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return image.tag


def build_host_images(needed: Sequence[HostImage] = HOST_IMAGES) -> dict[str, str]:
    """Every host image, built in parallel (debootstrap mostly waits on downloads and dpkg).

    One build at a time per machine: several e2e runs may share it, and the second one then
    finds the images the first one built.
    """
    BUILD_LOCK.touch(exist_ok=True)
    with BUILD_LOCK.open("r") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(needed)) as pool:
            tags = list(pool.map(build_image, needed))
    return {image.suite: tag for image, tag in zip(needed, tags, strict=True)}


# ---------------------------------------------------------------------------------------
# Running hosts
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostSpec:
    """One machine of the bed: which image, which engine it boots, how it is set up."""

    name: str
    image: HostImage
    role: str  # dockerd | containerd | none (podman needs no daemon)
    daemon_json: dict[str, Any] | None = None


@dataclass(frozen=True)
class SshKey:
    private_openssh: str
    public_openssh: str


def new_ssh_key() -> SshKey:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return SshKey(private_openssh=private, public_openssh=public)


@dataclass
class Host:
    """A booted host: its address on the stack's network and its SSH host key."""

    spec: HostSpec
    container: Any
    address: str
    host_key: str  # "ssh-ed25519 AAAA..." as the host presents it

    @property
    def name(self) -> str:
        return self.spec.name

    def sh(self, script: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run a shell script as root on the host (docker exec: the test's back door, not SSH)."""
        result = subprocess.run(
            ["docker", "exec", "-i", self.container.name, "/bin/sh", "-c", script],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if check and result.returncode != 0:
            output = f"{result.stdout}\n{result.stderr}"
            raise AssertionError(f"{self.name}: `{script}` failed ({result.returncode}):\n{output}")
        return result

    def read(self, path: str) -> bytes | None:
        """A file's bytes on the host, None when it does not exist."""
        result = subprocess.run(
            ["docker", "exec", self.container.name, "cat", path], capture_output=True, check=False
        )
        return result.stdout if result.returncode == 0 else None

    def pid_of(self, program: str) -> int:
        return int(self.sh(f"pidof {program}").stdout.split()[0])


@dataclass
class HostBed:
    """The booted hosts of one test module; `teardown` removes them with their volumes."""

    client: docker.DockerClient
    hosts: dict[str, Host] = field(default_factory=dict)
    boot_seconds: float = 0.0
    ssh_key: SshKey | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def teardown(self) -> None:
        for host in self.hosts.values():
            with contextlib.suppress(docker.errors.APIError):
                host.container.remove(force=True, v=True)
        self.hosts.clear()


def remove_leftover_hosts(client: docker.DockerClient, labels: dict[str, str]) -> None:
    """Hosts an interrupted run left behind, with their engine volumes (anonymous: they would
    outlive a plain `docker rm`)."""
    filters = {"label": [HOST_LABEL, *(f"{key}={value}" for key, value in labels.items())]}
    for container in client.containers.list(all=True, filters=filters):
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True, v=True)


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), mode
            if path.startswith("/home/deploy/"):
                info.uid = info.gid = 1000
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _create_host(
    client: docker.DockerClient, spec: HostSpec, network: str, prefix: str, key: SshKey, labels: dict[str, str]
) -> Any:
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(f"{prefix}-{spec.name}").remove(force=True, v=True)
    # The working set of platform.md instead of --privileged. `systempaths=unconfined` is
    # the CLI's name for empty MaskedPaths/ReadonlyPaths, which the SDK only takes raw.
    host_config = client.api.create_host_config(
        init=True,
        cgroupns="private",
        cap_add=["ALL"],
        cap_drop=["SYS_RESOURCE"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        device_cgroup_rules=["a *:* rwm"],
        network_mode=network,
    )
    host_config.update({"MaskedPaths": [], "ReadonlyPaths": []})
    created = client.api.create_container(
        spec.image.tag,
        command=[BOOT_PATH, spec.role],
        name=f"{prefix}-{spec.name}",
        hostname=spec.name,
        labels={**labels, HOST_LABEL: spec.name},
        host_config=host_config,
        detach=True,
    )
    container = client.containers.get(created["Id"])
    authorized = (key.public_openssh + "\n").encode()
    files = {
        "/root/.ssh/authorized_keys": (authorized, 0o600),
        "/home/deploy/.ssh/authorized_keys": (authorized, 0o600),
    }
    if spec.daemon_json is not None:
        files["/etc/docker/daemon.json"] = ((json.dumps(spec.daemon_json, indent=2) + "\n").encode(), 0o644)
    container.put_archive("/", _tar(files))
    container.start()
    return container


def _wait_booted(container: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status != "running":
            break
        if container.exec_run(["test", "-e", READY_FILE]).exit_code == 0:
            return
        time.sleep(0.3)
    logs = container.logs(tail=40).decode(errors="replace")
    raise AssertionError(f"host {container.name} did not boot ({container.status}):\n{logs}")


def _booted_host(client: docker.DockerClient, spec: HostSpec, container: Any, network: str) -> Host:
    _wait_booted(container)
    container.reload()
    address = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
    public = container.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).output.decode().split()
    return Host(spec=spec, container=container, address=address, host_key=f"{public[0]} {public[1]}")


@contextlib.contextmanager
def host_bed(
    client: docker.DockerClient, specs: Sequence[HostSpec], network: str, prefix: str, key: SshKey,
    labels: dict[str, str] | None = None,
) -> Iterator[HostBed]:
    """Boot every host on `network` in parallel; remove them (and their volumes) afterwards."""
    bed = HostBed(client)
    started = time.monotonic()
    try:
        for spec in specs:
            container = _create_host(client, spec, network, prefix, key, labels or {})
            bed.hosts[spec.name] = Host(spec=spec, container=container, address="", host_key="")
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(specs)) as pool:
            booted = pool.map(lambda s: _booted_host(client, s, bed.hosts[s.name].container, network), specs)
            for host in booted:
                bed.hosts[host.name] = host
        bed.boot_seconds = time.monotonic() - started
        yield bed
    finally:
        bed.teardown()


if __name__ == "__main__":
    begun = time.monotonic()
    for suite, tag in build_host_images().items():
        print(f"{suite}: {tag}")
    print(f"built or found in {time.monotonic() - begun:.0f} s")
