"""Why a cache could not serve a manifest or blob, as a registry error a client can act on.

The front calls this only after a cache (or its standby) answered a manifest request with
404 or 500, or a blob request with 500. What distribution's proxy says then is not what a
client can use (distribution 2.8 and 3.1 alike, registry/handlers/manifests.go and
registry/proxy):

- a manifest digest the upstream lacks: the proxy wraps the upstream's MANIFEST_UNKNOWN
  into `500 UNKNOWN` (only ErrManifestUnknownRevision becomes a 404), where the OCI
  distribution spec wants `404 MANIFEST_UNKNOWN`; oras, which asks for a manifest before
  it pushes, gives up on that 500 instead of reaching the front's 405;
- an upstream that rate-limits: a tag lookup falls back to local storage, so an uncached
  tag becomes `404 MANIFEST_UNKNOWN`, and the manifest or blob fetch that hits the 429
  becomes `500 UNKNOWN`. Neither says that waiting, or credentials, would help.

So the agent asks the upstream itself, with a HEAD (never counted by Docker Hub), and
answers from what it hears. Docker Hub, when the pull limit is used up, answers a manifest
GET with `429` and `{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your
pull rate limit. ..."}]}`, and every manifest HEAD with `200` plus `ratelimit-limit:
100;w=21600` and `ratelimit-remaining: 0;w=21600` (docs.docker.com, "Docker Hub pull
usage and limits"; its "overall" request limit is a bare `429 Too Many Requests`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .upstream import UpstreamAnswer, UpstreamConfig

RATE_LIMIT_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after")
API_VERSION = {"Docker-Distribution-Api-Version": "registry/2.0"}


@dataclass(frozen=True)
class ProbeRequest:
    upstream: str
    repository: str
    kind: str  # "manifests" or "blobs"
    reference: str
    cache_status: int


@dataclass(frozen=True)
class Answer:
    """A registry error: status, code, message, and the headers to send with it."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> bytes:
        error = {"code": self.code, "message": self.message, "detail": None}
        return json.dumps({"errors": [error]}).encode()

    def all_headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json; charset=utf-8", **API_VERSION, **self.headers}


def parse_path(path: str) -> tuple[str, str, str] | None:
    """(repository, 'manifests'|'blobs', reference) of a /v2/ content path, else None."""
    parts = path.split("?", 1)[0].split("/")
    if len(parts) < 5 or parts[0] != "" or parts[1] != "v2" or parts[-2] not in ("manifests", "blobs"):
        return None
    repository = "/".join(parts[2:-2])
    if not repository or not parts[-1]:
        return None
    return repository, parts[-2], parts[-1]


def is_limited(answer: UpstreamAnswer) -> bool:
    """A 429, or a success that says no pulls are left (Docker Hub's HEAD over the limit)."""
    if answer.status == 429:
        return True
    remaining = answer.header("ratelimit-remaining").split(";", 1)[0].strip()
    return answer.status is not None and answer.status < 400 and remaining == "0"


def classify(request: ProbeRequest, upstream: UpstreamConfig, answer: UpstreamAnswer) -> Answer:
    """The answer for the client, from what the upstream said about the content."""
    what = _what(request)
    where = f"the upstream {upstream.name!r} ({upstream.url})"
    unknown = "MANIFEST_UNKNOWN" if request.kind == "manifests" else "BLOB_UNKNOWN"
    if is_limited(answer):
        return Answer(429, "TOOMANYREQUESTS", _rate_limited_message(what, where, upstream, answer), _limits(answer))
    if not answer.reachable:
        return Answer(404, unknown, f"{what} is not in the cache, and {where} cannot be reached "
                      f"({answer.error}): only content already cached can be pulled until it is back")
    status = answer.status or 0
    if status == 404:
        return Answer(404, unknown, f"{what} is neither in the cache nor at {where}")
    if status in (401, 403):
        hint = "" if upstream.has_credentials else " (no upstreamCredentials are set for it)"
        return Answer(404, unknown, f"{what} is not in the cache, and {where} refused the cache access to it "
                      f"(HTTP {status}): the repository does not exist there, or it is private{hint}")
    if status >= 500:
        return Answer(503, "UNAVAILABLE", f"{what} is not in the cache, and {where} is failing "
                      f"(HTTP {status}): retry later", {"Retry-After": "30"})
    return Answer(503, "UNAVAILABLE", f"{where} has {what}, but the cache could not fetch it just now "
                  f"(the cache answered HTTP {request.cache_status}): retry", {"Retry-After": "5"})


def _what(request: ProbeRequest) -> str:
    if request.kind == "blobs":
        return f"blob {request.reference} of {request.repository}"
    separator = "@" if ":" in request.reference else ":"
    return f"{request.repository}{separator}{request.reference}"


def _rate_limited_message(what: str, where: str, upstream: UpstreamConfig, answer: UpstreamAnswer) -> str:
    limits = ", ".join(f"{name}: {answer.header(name)}" for name in RATE_LIMIT_HEADERS if answer.header(name))
    said = f"HTTP {answer.status}" + (f", {limits}" if limits else "")
    advice = "retry later" if upstream.has_credentials else \
        "set upstreamCredentials for this upstream to get a higher limit, or retry later"
    return (f"{where} is rate-limiting this cache ({said}), so {what}, which is not in the cache yet, "
            f"cannot be fetched; images already in the cache still pull. {advice[0].upper()}{advice[1:]}")


def _limits(answer: UpstreamAnswer) -> dict[str, str]:
    return {name.title(): answer.header(name) for name in RATE_LIMIT_HEADERS if answer.header(name)}


class Prober:
    """classify() over a live upstream, each verdict remembered for `memo_seconds`.

    A herd of clients asking for the same uncached image while the upstream rate-limits
    costs the upstream one HEAD per memo period, not one per client.
    """

    def __init__(
        self,
        upstreams: dict[str, UpstreamConfig],
        head: Callable[[UpstreamConfig, str, str, str], UpstreamAnswer],
        memo_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstreams = upstreams
        self._head = head
        self._memo_seconds = memo_seconds
        self._clock = clock
        self._memo: dict[tuple[str, str, str, str], tuple[float, UpstreamAnswer]] = {}

    def answer(self, request: ProbeRequest) -> Answer:
        upstream = self.upstreams.get(request.upstream)
        if upstream is None:
            return Answer(404, "NAME_UNKNOWN", f"no upstream named {request.upstream!r} is cached here")
        return classify(request, upstream, self._ask(upstream, request))

    def _ask(self, upstream: UpstreamConfig, request: ProbeRequest) -> UpstreamAnswer:
        key = (upstream.name, request.repository, request.kind, request.reference)
        now = self._clock()
        remembered = self._memo.get(key)
        if remembered and now - remembered[0] < self._memo_seconds:
            return remembered[1]
        answer = self._head(upstream, request.repository, request.kind, request.reference)
        self._memo = {k: v for k, v in self._memo.items() if now - v[0] < self._memo_seconds}
        self._memo[key] = (now, answer)
        return answer
