"""scripts/check-stack-files: a secret written in plain text in a stack file fails, by file, key and index.

Stack files are written as the CLI writes them: an encrypted value or list element is a mapping
`{secure: <ciphertext>}` (pulumi/pulumi sdk/go/common/resource/config/value.go MarshalYAML ->
object.go, which writes a secure element as a one-key map `secure`), a plain one is text.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import stack_files
from components.config_schema import KEYS, SECRET_KEYS

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check-stack-files"
CIPHERTEXT = {"secure": "v1:K0i0mr3Uxc0fYc3y:KtIpDaOPJ1jx6u9PPVd3RqSdZtCE"}


def write_stack(folder: Path, stack: str, config: dict) -> Path:
    path = folder / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def run(*files: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "REGISTRY_STACK_PYTHON": sys.executable}
    return subprocess.run(
        [str(SCRIPT), *map(str, files)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


SECRET_LISTS = sorted(key.name for key in KEYS if key.secret and key.type == "array")


def test_the_secret_lists_come_from_the_config_table() -> None:
    assert {"users", "upstreamCredentials"} <= SECRET_KEYS
    assert SECRET_LISTS == ["upstreamCredentials", "users"]


@pytest.mark.parametrize("name", SECRET_LISTS)
def test_a_partly_encrypted_list_fails_naming_file_key_index_and_fix(tmp_path: Path, name: str) -> None:
    plain = "alice:correct-horse-1" if name == "users" else "docker=alice:correct-horse-1"
    file = write_stack(tmp_path, "stage", {f"registry-stack:{name}": [CIPHERTEXT, plain, CIPHERTEXT]})
    result = run(file)
    assert result.returncode == 1
    assert "Pulumi.stage.yaml" in result.stderr
    assert f"entry 1 of registry-stack:{name} is plain text while other entries are encrypted" in result.stderr
    assert f"pulumi config set --stack stage --secret --path 'registry-stack:{name}[1]'" in result.stderr
    # Only the plain entry is named, and its password is never shown.
    assert f"{name}[0]" not in result.stderr and f"{name}[2]" not in result.stderr
    assert "correct-horse-1" not in result.stdout + result.stderr


def test_every_plain_entry_is_named(tmp_path: Path) -> None:
    file = write_stack(tmp_path, "prod", {"registry-stack:users": ["bob:pw-1", CIPHERTEXT, "carol:pw-2"]})
    problems = stack_files.plain_secrets_in(file)
    assert [(p.key.name, p.index, p.mixed) for p in problems] == [("users", 0, True), ("users", 2, True)]


def test_a_plain_secret_string_fails(tmp_path: Path) -> None:
    file = write_stack(tmp_path, "dev", {"registry-stack:mirrorSshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----"})
    result = run(file)
    assert result.returncode == 1
    assert "registry-stack:mirrorSshPrivateKey is plain text" in result.stderr
    assert "pulumi config set --stack dev --secret registry-stack:mirrorSshPrivateKey" in result.stderr
    assert "BEGIN OPENSSH" not in result.stderr


def test_encrypted_lists_values_and_plain_non_secrets_pass(tmp_path: Path) -> None:
    file = write_stack(tmp_path, "dev", {
        "registry-stack:users": [CIPHERTEXT, CIPHERTEXT],
        "registry-stack:upstreamCredentials": CIPHERTEXT,  # the whole list encrypted (config set --secret)
        "registry-stack:mirrorSshPrivateKey": CIPHERTEXT,
        "registry-stack:upstreams": ["docker=https://registry-1.docker.io", "ghcr=https://ghcr.io"],
        "registry-stack:domain": "dev.internal.network",
    })
    result = run(file)
    assert result.returncode == 0, result.stderr
    assert "Pulumi.dev.yaml" in result.stdout


def test_one_bad_file_among_good_ones_fails_and_is_named(tmp_path: Path) -> None:
    good = write_stack(tmp_path, "dev", {"registry-stack:users": [CIPHERTEXT]})
    bad = write_stack(tmp_path, "stage", {"registry-stack:users": [CIPHERTEXT, "eve:pw-3"]})
    result = run(good, bad)
    assert result.returncode == 1
    assert "Pulumi.stage.yaml" in result.stderr and "Pulumi.dev.yaml" not in result.stderr


def test_the_committed_stack_files_pass() -> None:
    result = run()
    assert result.returncode == 0, result.stderr
    for file in stack_files.stack_files():
        assert file.name in result.stdout
