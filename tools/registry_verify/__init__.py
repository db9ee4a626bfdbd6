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

from registry_verify.checks import PASSWORD_ENV
from registry_verify.cli import main
from registry_verify.client import Credentials, connect_address, parse_resolve
from registry_verify.outputs import Registry, UsageError

__all__ = ["PASSWORD_ENV", "Credentials", "Registry", "UsageError", "connect_address", "main", "parse_resolve"]
