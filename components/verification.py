"""Verification: every `pulumi up` ends by checking that the stack serves, and fails if not.

Why the containers' own `wait` is not enough: pulumi-docker (kreuzwerker's provider) waits
for "healthy" only while it creates a container (kreuzwerker/terraform-provider-docker#467:
"the healthy state is only checked at resource creation"), and it sets the container's ID
before that wait, so a container that misses it is stored as created-with-errors. The next
`pulumi up` sends an empty update for it (pulumi/pulumi `pkg/resource/deploy/step_generator.go`:
a resource with init errors gets an update even without a diff), the provider's update has
nothing to change and does not wait, and the update reports success (pulumi/pulumi#21458).
The front and the DaemonMirrors would then build on a registry that never served.

How: the stack's last step is a run-to-completion container on the stack's own network,
on the Docker host the stack runs on (so a remote `docker:host` is checked where it runs):
pulumi-docker's `Container` with `attach=True, must_run=False` waits for it to exit and
returns its `exit_code` and `container_logs` (kreuzwerker `resourceDockerContainerCreate`:
`ContainerWait(..., WaitConditionNotRunning)`, then Read sets `exit_code`). The provider does
not fail on a non-zero exit, so the program does: `RunError` with the lines of what does not
serve, which the Python language host prints as the message alone. The container's env
carries a new id on every program run (a `pulumi up` is a new process), which replaces it,
so it runs on every `pulumi up`, including the one that only sends empty updates. A
DaemonMirror waits for a passing verification before it points a host at the cache.

Why not a `command.local.Command`: it would run on the machine that runs the CLI, which
reaches at most the front's published port (not each registry behind it, and not at all
when the front listens on an address only the site reaches); why not a dynamic provider:
the same, and it needs the CLI machine to reach the Docker host's networks.

What "serves" means: every registry answers `/v2/` on the network (each cache itself, not
only its standby), and the front answers each public name over HTTPS with a registry's
answer (401 for names behind basic auth, 200 or 403 for the anonymous caches). Certificates
are not judged here (the check runs inside the network; `scripts/verify` checks trust).
The checks are retried for `VERIFY_SECONDS`, for a cache that is still starting or an ACME
certificate that is still being issued.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_docker as docker

from . import renderers

if TYPE_CHECKING:
    from .settings import Settings

ROLE = "verify"
# New for every program run: a `pulumi up` is a new process, so the verification container
# is replaced and runs again on every update. (The same within one process, which keeps
# two declarations in one test run identical.)
RUN_ID = uuid.uuid4().hex
RUN_ENV = "REGISTRY_STACK_VERIFY_RUN"
VERIFY_SECONDS = 60
REQUEST_SECONDS = 10
RETRY_SECONDS = 2


@dataclass(frozen=True)
class Target:
    """One thing that must answer, and how it must answer."""

    name: str
    """What the user reads: `build registry`, `cache of docker (https://...)`, `front: <hostname>`."""
    url: str
    accept: tuple[int, ...]
    hint: str
    """What to do when it does not answer."""


def targets_for(settings: Settings) -> list[Target]:
    """Everything that must answer for the stack to serve, registries first, then the front."""
    names = settings.names
    registry = f":{renderers.REGISTRY_PORT}/v2/"
    front_logs = f"docker logs {names.container('front')}"
    targets = []
    if settings.enable_build:
        targets.append(Target(
            "build registry", f"http://{names.container('build')}{registry}", (200,),
            f"its log says why: docker logs {names.container('build')}",
        ))
    for scoped in settings.scopes():  # the stack, or each swarm node's caches
        targets += _cache_targets(scoped)
    authenticated = {settings.build_hostname, settings.unified_hostname}
    for hostname in settings.hostnames:
        # Basic auth answers 401 before it proxies; an anonymous cache read is 200, or 403
        # when cacheClientNetworks does not list the verification's own address.
        accept = (401,) if hostname in authenticated else (200, 403)
        targets.append(Target(
            f"front: https://{hostname}", f"https://{hostname}/v2/", accept,
            f"the front (TLS, routing) does not serve this name; in ACME modes the certificate may not be "
            f"issued yet ({front_logs})",
        ))
    return targets


def _cache_targets(settings: Settings) -> list[Target]:
    names = settings.names
    registry = f":{renderers.REGISTRY_PORT}/v2/"
    where = f" on {settings.node}" if settings.node else ""
    targets = []
    for upstream in settings.caches:
        targets.append(Target(
            f"cache of {upstream.name}{where} ({upstream.url})",
            f"http://{names.container(upstream.role)}{registry}", (200,),
            f"a cache cannot start while {upstream.url} is unreachable (or refuses its credentials); it restarts "
            f"by itself and serves once the upstream answers, and the standby serves what is cached meanwhile "
            f"(docker logs {names.container(upstream.role)})",
        ))
        targets.append(Target(
            f"standby of {upstream.name}{where}", f"http://{names.container(upstream.standby_role)}{registry}", (200,),
            f"docker logs {names.container(upstream.standby_role)}",
        ))
    return targets


def verification_script(targets: Sequence[Target], seconds: int | None = None) -> str:
    """A POSIX sh script (busybox sh and wget, as in the official registry image) that checks
    every target until all answer or `seconds` (VERIFY_SECONDS) pass; prints PASS/FAIL lines,
    exits 0 or 1."""
    seconds = VERIFY_SECONDS if seconds is None else seconds
    rounds = max(1, seconds // RETRY_SECONDS)
    lines = [
        "# registry-stack verification: every registry and the front must answer.",
        "status_of() {  # $1 url: the last HTTP status wget saw, empty when nothing answered",
        "  wget -S -q -O /dev/null --no-check-certificate \"$1\" >/tmp/verify.out 2>&1 &",
        "  pid=$!",
        "  # busybox wget has no timeout option everywhere: a timer kills it after REQUEST_SECONDS of",
        "  # real time (counting sleeps would stretch on a loaded host).",
        "  # (Its output goes nowhere: a sleep left behind must not hold the script's stdout open.)",
        f"  (sleep {REQUEST_SECONDS}; kill \"$pid\") >/dev/null 2>&1 </dev/null &",
        "  timer=$!",
        "  wait \"$pid\" 2>/dev/null",
        "  kill \"$timer\" 2>/dev/null",
        "  status=''",
        "  while read -r word code rest; do",
        "    case \"$word\" in HTTP/*) status=\"$code\" ;; esac",
        "  done </tmp/verify.out",
        "  echo \"$status\"",
        "}",
        "check() {  # $1 url, $2 accepted statuses: 0 when the url answers one of them",
        "  got=$(status_of \"$1\")",
        "  for want in $2; do [ \"$got\" = \"$want\" ] && return 0; done",
        "  return 1",
        "}",
        f"pending='{' '.join(str(index) for index in range(len(targets)))}'",
        "round=0",
        "while [ -n \"$pending\" ]; do",
        "  still=''",
        "  for index in $pending; do",
        "    case \"$index\" in",
    ]
    for index, target in enumerate(targets):
        accept = " ".join(str(code) for code in target.accept)
        lines.append(
            f"      {index}) check {shlex.quote(target.url)} {shlex.quote(accept)} || still=\"$still {index}\";"
            f" last_{index}=$got ;;"
        )
    lines += [
        "    esac",
        "  done",
        "  pending=$still",
        "  round=$((round + 1))",
        f"  if [ -z \"$pending\" ] || [ \"$round\" -ge {rounds} ]; then break; fi",
        f"  sleep {RETRY_SECONDS}",
        "done",
        "failed=0",
    ]
    for index, target in enumerate(targets):
        expected = "/".join(str(code) for code in target.accept)
        passed = shlex.quote(f"PASS {target.name}: {target.url} answers")
        failed = shlex.quote(f"FAIL {target.name}: {target.url} does not answer {expected} within {seconds} s")
        lines += [
            f"case \" $pending \" in *' {index} '*)",
            f"  echo {failed}\" (last answer: ${{last_{index}:-none}}): \"{shlex.quote(target.hint)}",
            "  failed=1 ;;",
            f"*) echo {passed} ;;",
            "esac",
        ]
    lines.append("exit \"$failed\"")
    return "\n".join(lines) + "\n"


def failure_message(container_name: str, exit_code: int | None, logs: str | None) -> str:
    """What `pulumi up` prints when the stack does not serve: each failing check, and why."""
    failures = [line.removeprefix("FAIL ") for line in (logs or "").splitlines() if line.startswith("FAIL ")]
    if not failures:
        tail = "\n".join((logs or "").strip().splitlines()[-5:]) or "(no output)"
        failures = [f"the verification itself failed (exit status {exit_code}): {tail}"]
    listed = "\n".join(f"  - {failure}" for failure in failures)
    return (
        f"the stack does not serve yet: {len(failures)} check(s) of {container_name} failed:\n{listed}\n"
        "Every pulumi up checks again and fails until all of them answer (a container that missed its "
        "health wait is not retried by the docker provider); the DaemonMirrors wait for a passing check."
    )


def run_once_container(
    logical_name: str,
    container_name: str,
    image: docker.RemoteImage,
    network: pulumi.Input[str],
    labels: Sequence[docker.ContainerLabelArgs],
    after: Sequence[pulumi.Resource],
    parent: pulumi.Resource,
    run_env: str = RUN_ENV,
    **spec: Any,
) -> docker.Container:
    """A container that runs once per `pulumi up` to completion (the verification, the pre-warm):
    attached, so the provider waits for its exit and keeps its code and logs; never restarted;
    a new RUN_ID in `run_env` each up makes it run again. `spec` adds its command, uploads, volumes."""
    return docker.Container(
        logical_name,
        name=container_name,
        image=image.image_id,
        # Read at construction: the e2e realizer's play_up gives each played `up` its own id.
        envs=[f"{run_env}={RUN_ID}"],
        attach=True,
        logs=True,
        must_run=False,
        restart="no",
        networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network, aliases=[container_name])],
        labels=list(labels),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=list(after), delete_before_replace=True),
        **spec,
    )


class Verification:
    """The run-to-completion container and `passed`: an Output of it that resolves only when
    every check passed (depend on it to wait for a serving stack); it raises otherwise."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        image: docker.RemoteImage,
        network: pulumi.Input[str],
        labels: Sequence[docker.ContainerLabelArgs],
        after: Sequence[pulumi.Resource],
        parent: pulumi.Resource,
    ) -> None:
        container_name = settings.names.container(ROLE)
        self.container = run_once_container(
            f"{name}-{ROLE}", container_name, image, network, labels, after, parent,
            # The registry image has busybox sh and wget; its entrypoint would start a registry.
            entrypoints=["/bin/sh", "-c"],
            command=[verification_script(targets_for(settings))],
        )

        def outcome(values: list[Any]) -> docker.Container:
            exit_code, logs = values
            if exit_code == 0:
                return self.container
            raise pulumi.RunError(failure_message(container_name, exit_code, logs))

        self.passed: pulumi.Output[docker.Container] = pulumi.Output.all(
            self.container.exit_code, self.container.container_logs
        ).apply(outcome)
