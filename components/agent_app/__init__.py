"""The stack's agent: a small stdlib-only Python service on the stack's network.

It runs in its own container (`agentImage`, the official python image by default) from
these files, uploaded by the program; nothing here imports Pulumi or the program, so the
container needs nothing beyond the standard library. Published nowhere: only the front
talks to it.

What it does, module by module:
- `upstream`: HEAD requests to an upstream registry, with the registry token flow
  (Bearer challenge, token endpoint, optional credentials), never following redirects.
- `probe`: when a cache cannot answer a manifest or blob (its 404 or 500), ask the upstream
  why, and turn the answer into a registry error a client can act on (429 TOOMANYREQUESTS
  when the upstream is rate-limiting, 404 MANIFEST_UNKNOWN / BLOB_UNKNOWN when it lacks
  the content or cannot be reached, 503 UNAVAILABLE otherwise).
- `server`: the HTTP endpoints the front calls.
"""
