"""verify: check a deployed registry-stack against its live endpoints, after `pulumi up`.

It performs the original write-up's validation, one PASS/FAIL/SKIP line per check:

- TLS: each registry's certificate verifies against the right CA (the stack's own CA from
  the `caCertPem` output in self-signed mode, the system trust store otherwise, or
  `--ca-file`);
- build registry: `/v2/` challenges anonymous clients with Basic auth, answers the user,
  `/v2/_catalog`, a repository's tags and a manifest (as the user), and an
  unauthenticated push is refused (401);
- every cache registry (`cacheUrls`: one per upstream; `cacheUrl` on older stacks):
  `/v2/` and `/v2/_catalog` answer anonymously, a cached repository's tags and a manifest,
  and a push is refused with a registry-style 405 UNSUPPORTED.

The stack's outputs come from `pulumi stack output --json` (`--stack NAME`) or from a JSON
file (`--outputs FILE`, `-` for stdin). The build user's password comes from the
REGISTRY_STACK_PASSWORD environment variable or a prompt; it is never printed.
`--resolve HOST:PORT:ADDRESS` (as curl's) or `--address ADDRESS` connect to a given address
while TLS (SNI, certificate check) and the Host header still use the registry name, so
the check runs before DNS or an /etc/hosts line exists.

Exit status: 0 when no check failed (skipped checks do not fail), 1 when one did, 2 when
the outputs or options cannot be used. Only the standard library: any python3 runs it.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import getpass
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

PROJECT_DIR = Path(__file__).resolve().parent
PASSWORD_ENV = "REGISTRY_STACK_PASSWORD"
API_VERSION_HEADER = "docker-distribution-api-version"
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])
# A push probe only opens an upload session, and only where the front must refuse it.
PROBE_REPOSITORY = "registry-stack-verify/probe"
# How many catalog entries to try when looking for a repository that has a tag.
CATALOG_PROBES = 20

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


class UsageError(Exception):
    """The outputs or the options cannot be used; nothing was checked."""


# ---------------------------------------------------------------------------------------
# What to check: the stack's outputs and the options
# ---------------------------------------------------------------------------------------


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


def parse_resolve(spec: str) -> tuple[str, int, str]:
    """curl's --resolve syntax: HOST:PORT:ADDRESS (an IPv6 ADDRESS may be in brackets)."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2]:
        raise UsageError(f"--resolve {spec!r}: expected HOST:PORT:ADDRESS, e.g. docker-build.example:443:10.0.0.5")
    return parts[0].lower(), int(parts[1]), parts[2].strip("[]")


def connect_address(registry: Registry, resolves: Sequence[tuple[str, int, str]], address: str) -> str:
    """The address to connect to instead of resolving the registry's name; "" = use DNS."""
    for host, port, target in resolves:
        if host == registry.host.lower() and port == registry.port:
            return target
    return address


@dataclass(frozen=True)
class Trust:
    context: ssl.SSLContext
    source: str


def trust_for(outputs: StackOutputs, ca_file: str | None) -> Trust:
    """The right CA: --ca-file, else the stack's own CA (self-signed mode), else the system's."""
    try:
        if ca_file:
            return Trust(ssl.create_default_context(cafile=ca_file), f"the CA file {ca_file}")
        if outputs.ca_cert_pem:
            return Trust(ssl.create_default_context(cadata=outputs.ca_cert_pem), "the stack's CA (caCertPem)")
    except (OSError, ssl.SSLError) as error:
        raise UsageError(f"cannot load the CA: {error}") from None
    return Trust(ssl.create_default_context(), "the system trust store")


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)  # never shown, not even in a traceback's locals

    def header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()


# ---------------------------------------------------------------------------------------
# Talking to a registry: HTTPS to its name, optionally through a pinned address
# ---------------------------------------------------------------------------------------


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to `address` when given; SNI, the certificate check and Host use the name."""

    def __init__(self, host: str, port: int, address: str, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._address = address
        self._tls_context = context

    def connect(self) -> None:
        if not self._address:
            super().connect()
            return
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls_context.wrap_socket(raw, server_hostname=self.host)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None

    def error_code(self) -> str:
        """The first registry error code of the body (UNAUTHORIZED, UNSUPPORTED, ...), or ""."""
        body = self.json()
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("code", ""))
        return ""


@dataclass
class Client:
    registry: Registry
    trust: Trust
    address: str
    timeout: float

    def _connection(self) -> PinnedHTTPSConnection:
        return PinnedHTTPSConnection(
            self.registry.host, self.registry.port, self.address, self.trust.context, self.timeout
        )

    def request(
        self,
        method: str,
        path: str,
        credentials: Credentials | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        connection = self._connection()
        sent = dict(headers or {})
        if credentials is not None:
            sent["Authorization"] = credentials.header()
        try:
            connection.request(method, path, body=b"" if method in ("POST", "PUT") else None, headers=sent)
            response = connection.getresponse()
            body = response.read()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
        finally:
            connection.close()

    def peer_certificate(self) -> dict[str, Any]:
        """Complete a verified TLS handshake and return the server's certificate."""
        connection = self._connection()
        try:
            connection.connect()
            assert isinstance(connection.sock, ssl.SSLSocket)
            return connection.sock.getpeercert() or {}
        finally:
            connection.close()


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    status: str
    role: str
    check: str
    detail: str

    def line(self) -> str:
        return f"{self.status}  {self.role:<5}  {self.check}: {self.detail}"


class CheckFailedError(Exception):
    """A check's expectation did not hold; the message says what was seen instead."""


class CheckSkippedError(Exception):
    """A check cannot run (nothing to look at); that is not a failure."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailedError(message)


def describe(answer: Answer) -> str:
    code = answer.error_code()
    return f"HTTP {answer.status}" + (f" {code}" if code else "")


def expect_registry_api(answer: Answer) -> None:
    version = answer.headers.get(API_VERSION_HEADER, "")
    expect(version == "registry/2.0", f"{describe(answer)} without the header Docker-Distribution-Api-Version")


@dataclass
class Image:
    """The repository and tag a registry's tags and manifest checks look at."""

    repository: str = ""
    tag: str = ""


def split_image(reference: str) -> Image:
    repository, _, tag = reference.partition(":")
    return Image(repository.strip("/"), tag)


def check_tls(client: Client) -> str:
    certificate = client.peer_certificate()
    expires = certificate.get("notAfter", "")
    detail = f"certificate of {client.registry.host} verified against {client.trust.source}"
    if expires:
        when = datetime.datetime.fromtimestamp(ssl.cert_time_to_seconds(expires), tz=datetime.UTC)
        days = (when - datetime.datetime.now(tz=datetime.UTC)).days
        detail += f", expires {when:%Y-%m-%d} (in {days} days)"
    return detail


def check_build_challenges_anonymous(client: Client) -> str:
    answer = client.request("GET", "/v2/")
    challenge = answer.headers.get("www-authenticate", "")
    expect(answer.status == 401, f"{describe(answer)}, expected 401: the build registry must not be open")
    expect(challenge.lower().startswith("basic"), f"401 without a Basic challenge ({challenge!r})")
    expect_registry_api(answer)
    return "401 with a Basic challenge, as the Docker client needs before it sends credentials"


def check_login(client: Client, credentials: Credentials | None) -> str:
    credentials = require(credentials)
    answer = client.request("GET", "/v2/", credentials)
    expect(answer.status != 401, f"{describe(answer)}: user {credentials.user!r} or the password is wrong")
    expect(answer.status == 200, f"{describe(answer)}, expected 200")
    expect_registry_api(answer)
    return f"200 for user {credentials.user!r}"


def require(credentials: Credentials | None) -> Credentials:
    if credentials is None:
        raise CheckFailedError(
            f"no credentials: give --user and the password in {PASSWORD_ENV} (or run in a terminal to be asked)"
        )
    return credentials


def check_cache_anonymous(client: Client) -> str:
    answer = client.request("GET", "/v2/")
    expect(answer.status == 200, f"{describe(answer)}, expected 200: a Docker daemon never sends credentials "
           "to its mirror, so the cache must answer anonymously")
    expect_registry_api(answer)
    return "200 without credentials, as a Docker daemon reads its mirror"


def check_catalog(client: Client, credentials: Credentials | None, image: Image) -> str:
    answer = client.request("GET", f"/v2/_catalog?n={CATALOG_PROBES}", credentials)
    expect(answer.status == 200, f"{describe(answer)}, expected 200")
    body = answer.json()
    repositories = body.get("repositories") if isinstance(body, dict) else None
    expect(isinstance(repositories, list), "the answer has no repositories list")
    assert isinstance(repositories, list)
    if not image.repository:
        image.repository = _first_tagged(client, credentials, [str(r) for r in repositories])
    shown = ", ".join(repositories[:3]) + (", ..." if len(repositories) > 3 else "")
    return f"200, repositories: {len(repositories)}" + (f" ({shown})" if repositories else "")


def _first_tagged(client: Client, credentials: Credentials | None, repositories: list[str]) -> str:
    """The first listed repository that has a tag: some are only blobs or deleted tags."""
    for repository in repositories:
        if _tags(client, credentials, repository):
            return repository
    return ""


def _tags(client: Client, credentials: Credentials | None, repository: str) -> list[str]:
    answer = client.request("GET", f"/v2/{quote(repository)}/tags/list", credentials)
    return _tags_of(answer) if answer.status == 200 else []


def check_tags(client: Client, credentials: Credentials | None, image: Image) -> str:
    if not image.repository:
        role = client.registry.role
        action = "push an image" if client.registry.needs_login else "pull an image through the cache"
        raise CheckSkippedError(f"no repository with a tag in the catalog: {action}, or name one with --image {role}=")
    answer = client.request("GET", f"/v2/{quote(image.repository)}/tags/list", credentials)
    expect(answer.status == 200, f"{image.repository}: {describe(answer)}, expected 200")
    tags = _tags_of(answer)
    expect(bool(tags), f"{image.repository}: no tags")
    if image.tag:
        expect(image.tag in tags, f"{image.repository}: tag {image.tag!r} is not among {tags[:10]}")
    else:
        image.tag = tags[0]
    return f"{image.repository}: {len(tags)} tags ({', '.join(tags[:5])}{', ...' if len(tags) > 5 else ''})"


def _tags_of(answer: Answer) -> list[str]:
    body = answer.json()
    tags = body.get("tags") if isinstance(body, dict) else None
    return [str(tag) for tag in tags] if isinstance(tags, list) else []


def check_manifest(client: Client, credentials: Credentials | None, image: Image) -> str:
    if not (image.repository and image.tag):
        raise CheckSkippedError("no tag to look at (see the tags check)")
    path = f"/v2/{quote(image.repository)}/manifests/{quote(image.tag)}"
    answer = client.request("HEAD", path, credentials, {"Accept": MANIFEST_TYPES})
    expect(answer.status == 200, f"{image.repository}:{image.tag}: {describe(answer)}, expected 200")
    digest = answer.headers.get("docker-content-digest", "")
    expect(digest.startswith("sha256:"), f"{image.repository}:{image.tag}: no Docker-Content-Digest")
    kind = answer.headers.get("content-type", "?")
    return f"{image.repository}:{image.tag} is {digest} ({kind})"


def check_anonymous_push_refused(client: Client) -> str:
    answer = client.request("POST", f"/v2/{PROBE_REPOSITORY}/blobs/uploads/")
    expect(answer.status == 401, f"{describe(answer)}, expected 401: anonymous clients must not push")
    return "an anonymous blob upload gets 401"


def check_cache_refuses_push(client: Client) -> str:
    answer = client.request("POST", f"/v2/{PROBE_REPOSITORY}/blobs/uploads/")
    expect(answer.status == 405, f"{describe(answer)}, expected 405 UNSUPPORTED: the cache is read-only")
    expect(answer.error_code() == "UNSUPPORTED", f"{describe(answer)}, expected the registry error UNSUPPORTED")
    return "405 UNSUPPORTED, as a pull-through cache answers a push"


Check = tuple[str, Callable[[], str]]


def build_checks(client: Client, credentials: Credentials | None, image: Image) -> list[Check]:
    return [
        ("/v2/ without credentials", lambda: check_build_challenges_anonymous(client)),
        ("/v2/ as the user", lambda: check_login(client, credentials)),
        ("/v2/_catalog", lambda: check_catalog(client, require(credentials), image)),
        ("tags", lambda: check_tags(client, require(credentials), image)),
        ("manifest", lambda: check_manifest(client, require(credentials), image)),
        ("push without credentials", lambda: check_anonymous_push_refused(client)),
    ]


def cache_checks(client: Client, image: Image) -> list[Check]:
    return [
        ("/v2/ without credentials", lambda: check_cache_anonymous(client)),
        ("/v2/_catalog", lambda: check_catalog(client, None, image)),
        ("tags", lambda: check_tags(client, None, image)),
        ("manifest", lambda: check_manifest(client, None, image)),
        ("push", lambda: check_cache_refuses_push(client)),
    ]


def run_check(role: str, name: str, check: Callable[[], str]) -> Result:
    try:
        return Result(PASS, role, name, check())
    except CheckSkippedError as skipped:
        return Result(SKIP, role, name, str(skipped))
    except CheckFailedError as failed:
        return Result(FAIL, role, name, str(failed))
    except ssl.SSLCertVerificationError as error:
        return Result(FAIL, role, name, f"certificate not trusted: {error.verify_message}")
    except (OSError, http.client.HTTPException) as error:
        return Result(FAIL, role, name, f"{type(error).__name__}: {error}")


def tls_failure_hint(client: Client) -> str:
    return (
        f"not trusted by {client.trust.source}: in self-signed mode the stack's caCertPem is the CA; "
        "with letsencrypt-staging pass --ca-file with the staging roots"
    )


def verify_registry(client: Client, credentials: Credentials | None, image: Image) -> Iterator[Result]:
    role = client.registry.role
    tls = run_check(role, "TLS", lambda: check_tls(client))
    if tls.status == FAIL and "certificate not trusted" in tls.detail and "mismatch" not in tls.detail:
        tls = Result(FAIL, role, "TLS", f"{tls.detail}; {tls_failure_hint(client)}")
    yield tls
    checks = build_checks(client, credentials, image) if client.registry.needs_login else cache_checks(client, image)
    for name, check in checks:
        if tls.status == FAIL:
            # Every request would fail the same way; one FAIL line says it.
            yield Result(SKIP, role, name, "not run: TLS failed")
        else:
            yield run_check(role, name, check)


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="verify",
        description="Check a deployed registry-stack: TLS, /v2/, catalog, tags, a manifest on each "
        "registry, and that pushes are refused where they must be.",
        epilog=f"The build user's password is read from {PASSWORD_ENV}, or asked for in a terminal. "
        "Exit status: 0 all checks passed (skips allowed), 1 a check failed, 2 unusable outputs or options.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--stack", "-s", help="read the outputs with `pulumi stack output --json --stack STACK`")
    source.add_argument("--outputs", metavar="FILE", help="read the outputs from a JSON file ('-' = stdin)")
    parser.add_argument("--user", "-u", help="build registry user (default: the one in the dockerLogin output)")
    parser.add_argument("--ca-file", help="PEM file of the CA to trust instead of caCertPem / the system store")
    parser.add_argument(
        "--resolve", action="append", default=[], metavar="HOST:PORT:ADDRESS",
        help="connect to ADDRESS for HOST:PORT, keeping HOST for TLS and Host (like curl); repeatable",
    )
    parser.add_argument("--address", default="", help="connect to ADDRESS for every registry name (no DNS needed)")
    parser.add_argument(
        "--image", action="append", default=[], metavar="ROLE=REPO[:TAG]",
        help="image whose tags and manifest to check on one registry: ROLE is build, cache or <upstream>-cache "
        "(default: the first tagged repository of its catalog); repeatable",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    return parser.parse_args(argv)


def parse_images(specs: Sequence[str], registries: Sequence[Registry]) -> dict[str, Image]:
    roles = [r.role for r in registries]
    images: dict[str, Image] = {}
    for spec in specs:
        role, equals, reference = spec.partition("=")
        if not equals or not reference or role not in roles:
            raise UsageError(f"--image {spec!r}: expected ROLE=REPO[:TAG] with ROLE one of {', '.join(roles)}")
        images[role] = split_image(reference)
    return images


def read_credentials(user: str, build: Registry, environ: Mapping[str, str], stdin: TextIO) -> Credentials | None:
    if not user:
        return None
    password = environ.get(PASSWORD_ENV)
    if password is None and stdin.isatty():
        password = getpass.getpass(f"password of {user} at {build.host}: ")
    return Credentials(user, password) if password else None


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
) -> int:
    environ = os.environ if environ is None else environ
    stdin = sys.stdin if stdin is None else stdin
    out = sys.stdout if out is None else out
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        outputs = parse_outputs(read_outputs(args.stack, args.outputs, stdin))
        resolves = [parse_resolve(spec) for spec in args.resolve]
        images = parse_images(args.image, outputs.registries)
        trust = trust_for(outputs, args.ca_file)
    except UsageError as error:
        print(f"verify: {error}", file=sys.stderr)
        return 2
    if not outputs.registries:
        print("SKIP  -      nothing to verify: buildUrl and cacheUrl are empty (both registries are off)", file=out)
        return 0

    build = outputs.build
    credentials = read_credentials(args.user or outputs.login_user, build, environ, stdin) if build else None
    results: list[Result] = []
    for registry in outputs.registries:
        client = Client(registry, trust, connect_address(registry, resolves, args.address), args.timeout)
        via = f" via {client.address}" if client.address else ""
        print(f"--    {registry.role:<5}  {registry.url}{via}", file=out)
        for result in verify_registry(client, credentials, images.get(registry.role, Image())):
            print(result.line(), file=out, flush=True)
            results.append(result)
    return summarize(results, out)


def summarize(results: Sequence[Result], out: TextIO) -> int:
    counts = {status: sum(1 for r in results if r.status == status) for status in (PASS, FAIL, SKIP)}
    verdict = FAIL if counts[FAIL] else PASS
    print(f"verify: {verdict} ({counts[PASS]} PASS, {counts[FAIL]} FAIL, {counts[SKIP]} SKIP)", file=out)
    return 1 if counts[FAIL] else 0


if __name__ == "__main__":
    sys.exit(main())
