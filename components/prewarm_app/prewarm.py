"""The pre-warm run: pull each `prewarm` image through its cache, then check the cache stored it.

Runs in a run-to-completion container (components/prewarm.py) on the stack's network, with
python3's standard library only (the agent's image). For each image: the manifest (by tag or
digest), every platform's manifest of an index, and every blob they name, each checked
against its digest; then it waits until the cache's storage (mounted read-only) holds all
of them: distribution 2.8 writes a proxied blob in a goroutine of its own after it answered
(registry/proxy/proxyblobstore.go, `go func(dgst) { pbs.storeLocal(...) }`), so an answered
GET does not yet mean "cached".

Prints one line per image, `PREWARMED <label>: ...` or `PREWARM-FAILED <label>: <reason>`,
which the program turns into warnings and the `prewarmFailures` output, and always exits 0:
a failed image must not fail the rest (the program reads a non-zero exit as the run itself
failing).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
# Layers a registry does not hold (Windows base layers are fetched from their `urls`).
FOREIGN_LAYER = "foreign"
CHUNK = 1024 * 1024


class PrewarmError(Exception):
    """Why one image could not be pre-warmed, as the user reads it."""


def _error_text(error: urllib.error.HTTPError) -> str:
    """`HTTP 404 MANIFEST_UNKNOWN: manifest unknown`, from the registry's error body if it has one."""
    try:
        errors = json.loads(error.read() or b"{}").get("errors") or []
        first = errors[0] if errors else {}
        detail = f" {first.get('code', '')}: {first.get('message', '')}".rstrip(": ") if first else ""
    except (ValueError, AttributeError):
        detail = ""
    return f"HTTP {error.code}{detail}"


def _get(url: str, seconds: float, accept: str = "") -> Any:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        return urllib.request.urlopen(request, timeout=seconds)
    except urllib.error.HTTPError as error:
        raise PrewarmError(_error_text(error)) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise PrewarmError(f"the cache did not answer ({reason})") from None


def _digest(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _is_digest(reference: str) -> bool:
    return reference.startswith(("sha256:", "sha512:"))


def fetch_manifest(cache: str, repository: str, reference: str, seconds: float) -> tuple[dict[str, Any], str]:
    """The manifest and its digest; a digest reference must match the bytes received."""
    with _get(f"{cache}/v2/{repository}/manifests/{reference}", seconds, ACCEPT) as answer:
        body = answer.read()
        media_type = (answer.headers.get("Content-Type") or "").split(";")[0].strip()
    digest = _digest(body, reference.split(":", 1)[0] if _is_digest(reference) else "sha256")
    if _is_digest(reference) and digest != reference:
        raise PrewarmError(f"the manifest received for {reference} has the digest {digest}")
    try:
        manifest = json.loads(body)
    except ValueError:
        raise PrewarmError(f"the manifest of {repository}:{reference} is not JSON") from None
    manifest.setdefault("mediaType", media_type)
    return manifest, digest


def fetch_blob(cache: str, repository: str, digest: str, seconds: float) -> int:
    """GET one blob, read to the end (so the cache stores all of it), checked; its size."""
    algorithm = digest.split(":", 1)[0]
    hasher = hashlib.new(algorithm)
    size = 0
    with _get(f"{cache}/v2/{repository}/blobs/{digest}", seconds) as answer:
        while chunk := answer.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    if f"{algorithm}:{hasher.hexdigest()}" != digest:
        raise PrewarmError(f"the blob {digest} arrived with other bytes (digest {algorithm}:{hasher.hexdigest()})")
    return size


def blob_path(storage: str, digest: str) -> str:
    """Where distribution's filesystem driver keeps a blob (registry/storage/paths.go, blobDataPathSpec)."""
    algorithm, hex_part = digest.split(":", 1)
    return f"{storage}/docker/registry/v2/blobs/{algorithm}/{hex_part[:2]}/{hex_part}/data"


def tag_link_path(storage: str, repository: str, tag: str) -> str:
    """The tag's current link (paths.go, manifestTagCurrentPathSpec)."""
    return f"{storage}/docker/registry/v2/repositories/{repository}/_manifests/tags/{tag}/current/link"


def _blobs_of(manifest: dict[str, Any]) -> list[str]:
    descriptors = [manifest["config"]] if isinstance(manifest.get("config"), dict) else []
    descriptors += [layer for layer in manifest.get("layers") or [] if FOREIGN_LAYER not in layer.get("mediaType", "")]
    return [descriptor["digest"] for descriptor in descriptors]


def warm(image: dict[str, str], cache: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Pull one image through `cache`; what it holds: manifest digests, blob digests, bytes."""
    url, repository, reference = cache["url"], image["repository"], image["reference"]
    top, top_digest = fetch_manifest(url, repository, reference, seconds)
    manifests = {top_digest: top}
    if top.get("mediaType") in INDEX_TYPES or "manifests" in top:
        for child in top.get("manifests") or []:
            manifest, digest = fetch_manifest(url, repository, child["digest"], seconds)
            manifests[digest] = manifest
    blobs: dict[str, int] = {}
    for manifest in manifests.values():
        for digest in _blobs_of(manifest):
            if digest not in blobs:
                blobs[digest] = fetch_blob(url, repository, digest, seconds)
    return {"top": top_digest, "manifests": sorted(manifests), "blobs": blobs}


def wait_until_stored(storage: str, image: dict[str, str], held: dict[str, Any], seconds: float) -> None:
    """Every manifest and blob (and the tag) in the cache's storage, within `seconds`."""
    paths = [blob_path(storage, digest) for digest in [*held["manifests"], *held["blobs"]]]
    if not _is_digest(image["reference"]):
        paths.append(tag_link_path(storage, image["repository"], image["reference"]))
    deadline = time.monotonic() + seconds
    missing = [path for path in paths if not os.path.exists(path)]
    while missing and time.monotonic() < deadline:
        time.sleep(0.5)
        missing = [path for path in missing if not os.path.exists(path)]
    if missing:
        raise PrewarmError(
            f"pulled, but the cache had not stored {len(missing)} of {len(paths)} files after {seconds:.0f} s "
            f"(first: {missing[0].removeprefix(storage)}); its log says why"
        )


def wait_for_cache(url: str, seconds: float) -> str:
    """'' once the cache answers /v2/, else why not."""
    deadline = time.monotonic() + seconds
    reason = "no answer"
    while True:
        try:
            with _get(f"{url}/v2/", 5):
                return ""
        except PrewarmError as error:
            reason = str(error)
        if time.monotonic() >= deadline:
            return f"the cache does not serve ({reason}); nothing was pre-warmed"
        time.sleep(1)


def run(config: dict[str, Any]) -> list[str]:
    """One line per image: PREWARMED or PREWARM-FAILED."""
    lines: list[str] = []
    down: dict[str, str] = {}
    for image in config["images"]:
        cache = config["caches"][image["upstream"]]
        if image["upstream"] not in down:
            down[image["upstream"]] = wait_for_cache(cache["url"], config["readySeconds"])
        try:
            if down[image["upstream"]]:
                raise PrewarmError(down[image["upstream"]])
            held = warm(image, cache, config["requestSeconds"])
            wait_until_stored(cache["storage"], image, held, config["storeSeconds"])
        except PrewarmError as error:
            lines.append(f"PREWARM-FAILED {image['label']}: {error}")
        except Exception as error:  # a malformed manifest, say: this image fails, not the run
            lines.append(f"PREWARM-FAILED {image['label']}: {type(error).__name__}: {error}")
        else:
            size = sum(held["blobs"].values())
            lines.append(
                f"PREWARMED {image['label']}: {held['top']}, {len(held['manifests'])} manifest(s), "
                f"{len(held['blobs'])} blob(s), {size} bytes"
            )
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str]) -> int:
    with open(argv[1]) as file:
        run(json.load(file))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
