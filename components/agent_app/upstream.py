"""HEAD requests to an upstream registry, with its token flow; standard library only.

The flow is the one distribution's own proxy client follows (registry/client/auth in
distribution/distribution, and Docker's token spec, docs/spec/auth/token.md): a request
without credentials gets `401` with `WWW-Authenticate: Bearer realm=...,service=...,
scope=...`; a GET of `realm?service=...&scope=repository:<name>:pull` (with basic auth
when the cache has credentials for that upstream) returns `{"token": ...}` or
`{"access_token": ...}`; the request is repeated with `Authorization: Bearer <token>`.
An upstream that answers with a Basic challenge gets the credentials directly.

Only HEAD is ever sent for content: Docker Hub does not count HEAD requests against its
pull limit (docs.docker.com, "Docker Hub pull usage and limits"), so asking why a pull
failed never uses up a pull. Redirects are not followed: Docker Hub answers a blob HEAD
with a redirect to its CDN, which already says the blob exists.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    url: str
    username: str = ""
    password: str = ""

    @property
    def has_credentials(self) -> bool:
        return bool(self.username)


@dataclass(frozen=True)
class UpstreamAnswer:
    """What the upstream said, or why it could not be asked (`status` None)."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def reachable(self) -> bool:
        return self.status is not None

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """('bearer', {'realm': ..., 'service': ..., 'scope': ...}) from a WWW-Authenticate value."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


class UpstreamClient:
    """HEADs to one upstream; tokens are kept per repository until shortly before they expire."""

    def __init__(self, upstream: UpstreamConfig, timeout: float = 3.0) -> None:
        self.upstream = upstream
        self.timeout = timeout
        self._tokens: dict[str, tuple[str, float]] = {}
        self._opener = urllib.request.build_opener(
            _NoRedirect(), urllib.request.HTTPSHandler(context=ssl.create_default_context())
        )

    def head(self, repository: str, kind: str, reference: str) -> UpstreamAnswer:
        """HEAD /v2/<repository>/<kind>/<reference> ('manifests' or 'blobs')."""
        url = f"{self.upstream.url.rstrip('/')}/v2/{repository}/{kind}/{reference}"
        headers = {"Accept": MANIFEST_ACCEPT} if kind == "manifests" else {}
        token = self._cached_token(repository)
        if token:
            headers["Authorization"] = token
        answer = self._send(url, "HEAD", headers)
        if answer.status == 401:
            authorization = self._authorize(repository, answer.header("www-authenticate"))
            if authorization:
                answer = self._send(url, "HEAD", {**headers, "Authorization": authorization})
        return answer

    def _send(self, url: str, method: str, headers: dict[str, str]) -> UpstreamAnswer:
        request = urllib.request.Request(url, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return UpstreamAnswer(response.status, _lower(response.headers.items()))
        except urllib.error.HTTPError as error:
            return UpstreamAnswer(error.code, _lower(error.headers.items()))
        except (OSError, ValueError) as error:  # DNS, refused, timeout, TLS
            return UpstreamAnswer(None, error=_reason(error))

    def _cached_token(self, repository: str) -> str:
        token, valid_until = self._tokens.get(repository, ("", 0.0))
        return token if time.monotonic() < valid_until else ""

    def _authorize(self, repository: str, challenge: str) -> str:
        """The Authorization value the challenge asks for, or '' when none can be had."""
        scheme, params = parse_challenge(challenge)
        basic = self._basic()
        if scheme == "basic":
            return basic
        if scheme != "bearer" or not params.get("realm"):
            return ""
        query = {"scope": f"repository:{repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        url = f"{params['realm']}?{urllib.parse.urlencode(query)}"
        request = urllib.request.Request(url, headers={"Authorization": basic} if basic else {})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = json.loads(response.read(65536) or b"{}")
        except (OSError, ValueError):
            return ""
        token = body.get("token") or body.get("access_token") or ""
        if not token:
            return ""
        lifetime = float(body.get("expires_in") or 60)
        authorization = f"Bearer {token}"
        self._tokens[repository] = (authorization, time.monotonic() + max(lifetime - 30, 10))
        return authorization

    def _basic(self) -> str:
        if not self.upstream.has_credentials:
            return ""
        pair = f"{self.upstream.username}:{self.upstream.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


def _lower(items: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return str(reason if reason is not None else error) or type(error).__name__
