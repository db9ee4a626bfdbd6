"""The herd tier: Varnish in front of each cache, so that a herd of cold pulls costs one fetch.

distribution's proxy does not coalesce: every request for a blob that is not stored yet
streams its own copy from the upstream (3.x's in-process `inflight` map; upstream issue 4511
declined coalescing as out of scope), so N clients pulling a new image at once cost N upstream
fetches per blob (2.8: N+1). Varnish Cache coalesces requests for one object (the first
request fetches, the others wait on the object's waiting list) and streams: the object is
delivered to every waiting client as soon as the backend's headers arrive, while the body is
still being fetched (`beresp.do_stream`, on by default since Varnish 4). Waiting clients get
bytes as the fill proceeds, unlike nginx's `proxy_cache_lock`, whose waiters get nothing until
the whole fill is done (registry-facts.md).

    front ─▶ herd (Varnish) ─┬─▶ cache registry ─▶ upstream
                             └─▶ cache standby (fallback director: when the cache is sick)

What is stored where: the blob's one lasting copy is the cache registry's storage (its volume).
Varnish keeps blobs in memory only (`malloc`, HERD_MEMORY), for HERD_OBJECT_TTL after their
fetch: long enough for the herd, so disk use does not grow at all. A blob larger than
HERD_MAX_OBJECT_BYTES is passed through uncoalesced, so that one object never exceeds the
memory (Varnish cannot evict the object it is fetching). Only GETs and HEADs of blobs by digest
are coalesced; manifests (tags change), `/v2/` and everything else pass straight through.

Pure functions: they render the VCL and the container's start script, tested directly.
"""

from __future__ import annotations

HERD_PORT = 6081
HERD_VCL_PATH = "/etc/varnish/herd.vcl"
HERD_SCRIPT_PATH = "/etc/varnish/herd-start.sh"
HERD_WORKDIR = "/tmp/varnish-herd"
HERD_MEMORY = "1G"
HERD_MAX_OBJECT_BYTES = 512 * 2**20
HERD_OBJECT_TTL = "60s"
# A cold blob or manifest: the registry first authenticates to and asks the upstream.
FIRST_BYTE_TIMEOUT = "300s"
BETWEEN_BYTES_TIMEOUT = "300s"
BLOB_URL = r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$"


def herd_vcl(cache_host: str, standby_host: str, registry_port: int) -> str:
    """VCL 4.1 for the herd tier of one cache (Varnish 7.x)."""
    backend = """backend {name} {{
    .host = "{host}";
    .port = "{port}";
    .connect_timeout = 2s;
    .first_byte_timeout = {first_byte};
    .between_bytes_timeout = {between_bytes};
    .probe = registry_api;
}}
"""
    backends = "".join(
        backend.format(
            name=name, host=host, port=registry_port, first_byte=FIRST_BYTE_TIMEOUT,
            between_bytes=BETWEEN_BYTES_TIMEOUT,
        )
        for name, host in (("cache", cache_host), ("standby", standby_host))
    )
    return f"""vcl 4.1;
# Rendered by registry-stack (components/herd.py): coalesce and stream cold blob fetches.

import directors;
import std;

# `GET /v2/` answers 200 on an anonymous registry: the API liveness check.
probe registry_api {{
    .url = "/v2/";
    .interval = 2s;
    .timeout = 2s;
    .window = 3;
    .threshold = 2;
    .initial = 2;
}}

{backends}
sub vcl_init {{
    # The cache while its probe says healthy, the read-only standby otherwise (distribution
    # in proxy mode exits when its upstream is unreachable, upstream issue 4038).
    new registries = directors.fallback();
    registries.add_backend(cache);
    registries.add_backend(standby);
}}

sub vcl_recv {{
    set req.backend_hint = registries.backend();
    if ((req.method == "GET" || req.method == "HEAD") && req.url ~ "{BLOB_URL}") {{
        # Content-addressed: the same URL is the same bytes for every client. Reads are
        # anonymous on the cache host; a user's Authorization (unified endpoint) changes nothing.
        return (hash);
    }}
    return (pass);
}}

sub vcl_hash {{
    hash_data(req.url);
    return (lookup);
}}

sub vcl_backend_fetch {{
    if (bereq.retries > 0) {{
        # The cache did not answer (restarting, crash-looping): the standby may hold it.
        set bereq.backend = standby;
    }}
}}

sub vcl_backend_response {{
    if (bereq.url ~ "{BLOB_URL}" && beresp.status == 200
            && std.integer(beresp.http.Content-Length, 0) <= {HERD_MAX_OBJECT_BYTES}) {{
        set beresp.storage = storage.herd;
        set beresp.ttl = {HERD_OBJECT_TTL};
        set beresp.grace = 0s;
        set beresp.keep = 0s;
        set beresp.do_stream = true;
        return (deliver);
    }}
    # Errors, manifests and blobs too large for the memory: never stored, never coalesced.
    set beresp.uncacheable = true;
    set beresp.ttl = 0s;
    return (deliver);
}}

sub vcl_backend_error {{
    if (bereq.retries == 0) {{
        return (retry);
    }}
}}

sub vcl_deliver {{
    unset resp.http.Via;
    unset resp.http.X-Varnish;
    unset resp.http.Age;
}}
"""


def herd_start_script(cache_host: str, standby_host: str) -> str:
    """The container's command (POSIX sh): start varnishd, recompile the VCL on address changes.

    varnishd resolves a backend's host name only when it compiles VCL, and Docker gives a
    restarted container a new address: without a reload the tier would keep dialling the old
    one. Every 2 s the script resolves both names and, when the addresses changed and both
    resolve, loads and uses the VCL again (a fresh compile resolves them anew). varnishd starts
    only once both names resolve; until then the front's dial fails and it uses the standby.
    """
    command = (
        f'varnishd -F -j none -n "$workdir" -f "$vcl" -a :{HERD_PORT} '
        f"-s herd=malloc,{HERD_MEMORY} -s Transient=malloc,256M -p transit_buffer=4M"
    )
    return f"""#!/bin/sh
# Rendered by registry-stack (components/herd.py).
set -u
vcl={HERD_VCL_PATH}
workdir={HERD_WORKDIR}
names="{cache_host} {standby_host}"

addresses() {{
    for name in $names; do
        set -- $(getent hosts "$name")
        printf '%s ' "${{1:--}}"
    done
}}

# "-" stands for a name that does not resolve (a container that is not running).
all_resolve() {{
    case "$1" in *-*) return 1 ;; esac
}}

current=$(addresses)
until all_resolve "$current"; do
    sleep 1
    current=$(addresses)
done
{command} &
child=$!
trap 'kill -TERM "$child"; wait "$child"; exit 0' TERM INT
generation=0
previous=boot
while kill -0 "$child" 2>/dev/null; do
    sleep 2
    now=$(addresses)
    if all_resolve "$now" && [ "$now" != "$current" ]; then
        generation=$((generation + 1))
        if varnishadm -n "$workdir" vcl.load "g$generation" "$vcl" >/dev/null \\
                && varnishadm -n "$workdir" vcl.use "g$generation" >/dev/null; then
            echo "herd: backends now at $now(VCL g$generation)"
            varnishadm -n "$workdir" vcl.discard "$previous" >/dev/null 2>&1
            previous="g$generation"
            current=$now
        fi
    fi
done
wait "$child"
"""
