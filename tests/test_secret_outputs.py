"""Secrets from a program in another language arrive as Outputs: RegistryStack takes them.

users, upstreamCredentials and mirrorSshPrivateKey may be Outputs (pulumi.Output.secret);
their shape is checked when the value is known (an error raised in an apply fails the
deployment with the message), they stay secret to the containers, and every plain value
is still checked before anything registers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pulumi
import pytest

from components.config_schema import ConfigError
from components.registry_stack import RegistryStack
from tests import harness

P = "registry-stack"
FRONT = "registry-stack-dev-front"
CACHE = "registry-stack-dev-cache"


def _declare(args: Callable[[], dict[str, Any]]) -> harness.Declaration:
    """Run a program that builds its args itself (an Output lives in the program's event loop)."""
    def program() -> None:
        stack = RegistryStack("registry", args())  # type: ignore[arg-type]
        pulumi.export("dockerLogin", stack.docker_login)

    return harness.declare({}, program=program)


def _upload(declaration: harness.Declaration, container: str, suffix: str) -> Any:
    """The upload, as a SecretValue when the program declared it (or all uploads) secret."""
    uploads = declaration.containers[container].inputs["uploads"]
    if isinstance(uploads, harness.SecretValue):
        uploads = [harness.SecretValue(u) for u in uploads.value]
    (upload,) = [u for u in uploads if harness.unwrap(u)["file"].endswith(suffix)]
    return upload


def test_users_passed_as_a_secret_output_reach_the_front_config_as_a_secret() -> None:
    declaration = _declare(lambda: {"users": pulumi.Output.secret(["alice:correct-horse-1"])})
    upload = _upload(declaration, FRONT, ".json")
    assert isinstance(upload, harness.SecretValue) or isinstance(upload["content"], harness.SecretValue)
    text = harness.unwrap(upload)["content"]
    assert "alice" in text and "correct-horse-1" not in text, "the password arrives bcrypt-hashed"
    plain = _declare(lambda: {"users": ["alice:correct-horse-1"]})
    assert harness.unwrap(_upload(plain, FRONT, ".json"))["content"] == text, "the same config as plain users"
    assert declaration.outputs["dockerLogin"] == harness.SecretValue(plain.outputs["dockerLogin"])


def test_a_list_of_secret_outputs_is_taken_too() -> None:
    declaration = _declare(lambda: {"users": [pulumi.Output.secret("alice:correct-horse-1")]})
    assert "alice" in harness.unwrap(_upload(declaration, FRONT, ".json"))["content"]


@pytest.mark.parametrize(
    ("users", "message"),
    [
        (["alice"], f"{P}:users[0]=**** is invalid"),
        (["alice:short"], f"{P}:users[0] (user 'alice') has a password shorter than 8 characters"),
        ([], f"{P}:users is empty but {P}:enableBuild is true"),
    ],
)
def test_malformed_users_output_fails_the_deployment_naming_the_key(users: list[str], message: str) -> None:
    # Raised in the apply that renders the front's config: the SDK reports it as the failure
    # of that input ("While processing input: 'uploads' ... <message>"), which fails the deployment.
    with pytest.raises(ValueError) as caught:
        _declare(lambda: {"users": pulumi.Output.secret(users)})
    assert message in str(caught.value), str(caught.value)
    assert "short" not in str(caught.value).split("(user")[0]


def test_upstream_credentials_output_reach_the_cache_config_as_a_secret() -> None:
    declaration = _declare(lambda: {"enableBuild": False,
                            "upstreamCredentials": pulumi.Output.secret(["docker=bob:hub-token-123"])})
    upload = _upload(declaration, CACHE, "config.yml")
    assert isinstance(upload, harness.SecretValue) or isinstance(upload["content"], harness.SecretValue)
    assert "hub-token-123" in harness.unwrap(upload)["content"]
    with pytest.raises(ValueError, match=rf"{P}:upstreamCredentials\[0\] is for upstream 'ghcr'"):
        _declare(lambda: {"enableBuild": False, "upstreamCredentials": pulumi.Output.secret(["ghcr=bob:x"])})


def test_plain_values_are_still_checked_before_anything_registers() -> None:
    with pytest.raises(ConfigError, match=rf"{P}:httpsPort=0 is invalid"):
        _declare(lambda: {"users": pulumi.Output.secret(["alice:correct-horse-1"]), "httpsPort": 0})


def test_outputs_of_other_keys_are_refused_naming_the_ones_that_may_be() -> None:
    with pytest.raises(ConfigError) as caught:
        _declare(lambda: {"enableBuild": False, "domain": pulumi.Output.from_input("example.internal")})
    assert "users, upstreamCredentials, mirrorSshPrivateKey may be Outputs" in str(caught.value)


def test_config_of_the_front_is_json() -> None:
    declaration = _declare(lambda: {"users": pulumi.Output.secret(["alice:correct-horse-1"])})
    json.loads(harness.unwrap(_upload(declaration, FRONT, ".json"))["content"])
