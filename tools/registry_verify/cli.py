"""verify's command line: options, the password, one line per check and the verdict."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from registry_verify.checks import FAIL, PASS, PASSWORD_ENV, SKIP, Image, Result, split_image, verify_registry
from registry_verify.client import Client, Credentials, connect_address, parse_resolve, trust_for
from registry_verify.outputs import Registry, UsageError, parse_outputs, read_outputs
from registry_verify.stats import print_stats


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
    parser.add_argument(
        "--stats", action="store_true",
        help="print hit ratio, stored bytes and the cap per registry, and the top images by pulls, "
        "from the metrics endpoint (metricsUrl), instead of the checks",
    )
    parser.add_argument("--metrics-url", default="", help="the metrics endpoint to read with --stats "
                        "(default: the metricsUrl output)")
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
        if args.stats:
            return print_stats(args.metrics_url or outputs.metrics_url, args.timeout, out)
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
