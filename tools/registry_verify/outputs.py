"""What verify checks: the stack's outputs (`pulumi stack output --json` or a file)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

# tools/registry_verify/ -> the project folder, where the CLI finds Pulumi.yaml and the stacks.
PROJECT_DIR = Path(__file__).resolve().parents[2]


class UsageError(Exception):
    """The outputs or the options cannot be used; nothing was checked."""


@dataclass(frozen=True)
class Registry:
    role: str  # "build", "cache" (Docker Hub's cache), "<upstream>-cache" or "unified"
    url: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 443

    @property
    def is_build(self) -> bool:
        return self.role == "build"

    @property
    def needs_login(self) -> bool:
        """The build registry and the unified endpoint answer users only (it takes pushes)."""
        return self.role in ("build", "unified")


@dataclass(frozen=True)
class StackOutputs:
    registries: tuple[Registry, ...]  # the build registry first, then every cache
    ca_cert_pem: str
    login_user: str  # the user of the dockerLogin output, "" when there is none
    metrics_url: str = ""  # the metricsUrl output: http://host:port of the metrics endpoint, or ""

    @property
    def build(self) -> Registry | None:
        return next((r for r in self.registries if r.is_build), None)


def parse_outputs(outputs: Mapping[str, Any]) -> StackOutputs:
    """The outputs verify uses; a missing or secret output is a usage error."""
    for key in ("buildUrl", "cacheUrl"):
        if key not in outputs:
            raise UsageError(f"the stack outputs have no {key}: is this a registry-stack stack after `pulumi up`?")
    for key in ("buildUrl", "cacheUrl", "cacheUrls", "caCertPem", "dockerLogin"):
        if outputs.get(key) == "[secret]":
            raise UsageError(f"output {key} is a secret; registry-stack outputs are plain: update the stack")
    registries = [Registry("build", _https_url("buildUrl", outputs.get("buildUrl")))]
    registries += [Registry(role, url) for role, url in _cache_urls(outputs).items()]
    registries.append(Registry("unified", _https_url("unifiedUrl", outputs.get("unifiedUrl"))))
    return StackOutputs(
        registries=tuple(r for r in registries if r.url),
        ca_cert_pem=str(outputs.get("caCertPem") or ""),
        login_user=_user_of_login_line(str(outputs.get("dockerLogin") or "")),
        metrics_url=str(outputs.get("metricsUrl") or ""),
    )


def _cache_urls(outputs: Mapping[str, Any]) -> dict[str, str]:
    """role -> URL of every cache: `cacheUrls` (one per upstream), else the single `cacheUrl`."""
    by_upstream = outputs.get("cacheUrls")
    if not isinstance(by_upstream, dict):
        return {"cache": _https_url("cacheUrl", outputs.get("cacheUrl"))}
    # Docker Hub's cache ("docker") is the `cache` container and docker-cache.<domain>.
    roles = {name: "cache" if name == "docker" else f"{name}-cache" for name in sorted(by_upstream)}
    return {roles[name]: _https_url(f"cacheUrls.{name}", by_upstream[name]) for name in roles}


def _https_url(key: str, value: Any) -> str:
    url = str(value or "").rstrip("/")
    if url and (urlsplit(url).scheme != "https" or not urlsplit(url).hostname):
        raise UsageError(f"output {key}={url!r} is not an https URL")
    return url


def _user_of_login_line(line: str) -> str:
    """`docker login HOST -u USER` -> USER."""
    words = line.split()
    return words[words.index("-u") + 1] if "-u" in words[:-1] else ""


def read_outputs(stack: str | None, outputs_file: str | None, stdin: TextIO) -> dict[str, Any]:
    if outputs_file:
        text = stdin.read() if outputs_file == "-" else _read_text(Path(outputs_file))
        source = "stdin" if outputs_file == "-" else outputs_file
    else:
        text = _pulumi_stack_output(stack)
        source = "pulumi stack output"
    try:
        outputs = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"the outputs from {source} are not JSON: {error}") from None
    if not isinstance(outputs, dict):
        raise UsageError(f"the outputs from {source} are not a JSON object")
    return outputs


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None


def _pulumi_stack_output(stack: str | None) -> str:
    # Run in the project folder: that is where the CLI finds Pulumi.yaml and the stacks.
    command = ["pulumi", "stack", "output", "--json", *(["--stack", stack] if stack else [])]
    try:
        result = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UsageError(
            "the pulumi CLI is not on PATH: install it, or save the outputs elsewhere with "
            "`pulumi stack output --json > outputs.json` and pass --outputs outputs.json"
        ) from None
    if result.returncode != 0:
        raise UsageError(f"`{' '.join(command)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout
