"""The checks of the write-up's validation, one Result (PASS/FAIL/SKIP) each."""

from __future__ import annotations

import datetime
import http.client
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

from registry_verify.client import API_VERSION_HEADER, Answer, Client, Credentials

PASSWORD_ENV = "REGISTRY_STACK_PASSWORD"
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
