"""scripts/verify against the dev stack realized on the engine, as a user runs it after `pulumi up`.

The outputs file holds what `pulumi stack output --json` would print for that stack; the
password travels in REGISTRY_STACK_PASSWORD, as documented.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from testbed.clients import DockerCli, pull_and_forget, push_unique_image
from testbed.stack import RealizedStack
from testbed.upstreams import StandinUpstream
from testbed.verify import check_lines, run_verify

Skeleton = tuple[RealizedStack, StandinUpstream]


def status_of(result: subprocess.CompletedProcess, role: str, check: str) -> str:
    for line in result.stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1] == role and parts[2].startswith(f"{check}:"):
            return parts[0]
    raise AssertionError(f"no {role} {check} line:\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="module")
def images_in_both_registries(skeleton: Skeleton) -> tuple[str, str]:
    """One image pushed to build and one pulled through the cache, so every check has data."""
    stack, upstream = skeleton
    cli = DockerCli()
    try:
        build_repository = f"verify/app-{secrets.token_hex(4)}"
        build_tag = f"{stack.address('build')}/{build_repository}:1.0"
        cli.login(stack.address("build"), "admin", stack.password)
        push_unique_image(cli, build_tag)

        cache_repository = f"library/verify-{secrets.token_hex(4)}"
        push_unique_image(cli, f"{upstream.local_address}/{cache_repository}:3.18")
        pull_and_forget(cli, f"{stack.address('cache')}/{cache_repository}:3.18")
    finally:
        cli.cleanup()
    return f"{build_repository}:1.0", f"{cache_repository}:3.18"


def test_verify_passes_every_check_on_the_live_stack(
    skeleton: Skeleton, images_in_both_registries: tuple[str, str], tmp_path: Path
) -> None:
    stack, _ = skeleton
    build_image, cache_image = images_in_both_registries
    result = run_verify(stack, tmp_path, "--image", f"build={build_image}", "--image", f"cache={cache_image}")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = check_lines(result)
    assert len(checks) == 13 and all(line.startswith("PASS") for line in checks), result.stdout
    assert f"{build_image} is sha256:" in result.stdout
    assert f"{cache_image} is sha256:" in result.stdout
    assert "verified against the stack's CA (caCertPem)" in result.stdout
    assert stack.password not in result.stdout + result.stderr


def test_verify_finds_an_image_in_each_catalog_by_itself(
    skeleton: Skeleton, images_in_both_registries: tuple[str, str], tmp_path: Path
) -> None:
    stack, _ = skeleton
    result = run_verify(stack, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(line.startswith("PASS") for line in check_lines(result)), result.stdout


def test_verify_with_a_wrong_password_fails_the_auth_checks(
    skeleton: Skeleton, images_in_both_registries: tuple[str, str], tmp_path: Path
) -> None:
    stack, _ = skeleton
    wrong = "wrong-Pa55word-e2e"
    result = run_verify(stack, tmp_path, password=wrong)
    assert result.returncode == 1, result.stdout
    assert status_of(result, "build", "/v2/ as the user") == "FAIL"
    assert status_of(result, "build", "/v2/_catalog") == "FAIL"
    # What needs no credentials still holds.
    assert status_of(result, "build", "/v2/ without credentials") == "PASS"
    assert status_of(result, "build", "push without credentials") == "PASS"
    for check in ("/v2/ without credentials", "/v2/_catalog", "tags", "manifest", "push"):
        assert status_of(result, "cache", check) == "PASS", check
    assert wrong not in result.stdout + result.stderr
    assert stack.password not in result.stdout + result.stderr


def test_verify_resolve_connects_to_the_given_address(skeleton: Skeleton, tmp_path: Path) -> None:
    stack, _ = skeleton
    names = stack.outputs["hostnames"]

    def resolve(address: str) -> list[str]:
        return [f"--resolve={name}:{stack.https_port}:{address}" for name in names]

    # The front publishes on 127.0.0.1 only: 127.0.0.2 refuses, which proves the address is used.
    elsewhere = run_verify(stack, tmp_path, *resolve("127.0.0.2"))
    assert elsewhere.returncode == 1
    assert status_of(elsewhere, "build", "TLS") == "FAIL" and status_of(elsewhere, "cache", "TLS") == "FAIL"
    assert "ConnectionRefusedError" in elsewhere.stdout

    here = run_verify(stack, tmp_path, *resolve("127.0.0.1"))
    assert here.returncode == 0, here.stdout + here.stderr
    assert status_of(here, "build", "TLS") == "PASS"


def test_verify_refuses_a_certificate_outside_the_stack_ca(skeleton: Skeleton, tmp_path: Path) -> None:
    """Without caCertPem, the system trust store is used, and it does not know the stack's CA."""
    stack, _ = skeleton
    result = run_verify(stack, tmp_path, outputs={**stack.outputs, "caCertPem": None})
    assert result.returncode == 1
    assert status_of(result, "build", "TLS") == "FAIL" and status_of(result, "cache", "TLS") == "FAIL"
    assert "certificate not trusted" in result.stdout

    trusted = run_verify(stack, tmp_path, "--ca-file", str(stack.ca_file), outputs={**stack.outputs, "caCertPem": None})
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
