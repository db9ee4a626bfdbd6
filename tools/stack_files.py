"""Check the stack files (Pulumi.<stack>.yaml) for secrets written in plain text.

The program cannot see this: the engine marks a config key secret as a whole when any element
of its value is encrypted (pulumi/pulumi sdk/go/common/resource/config/object.go, `Secure()`
returns true on the first secure element), so a `users` list with one `--secret` entry and one
plain entry reaches the program as a secret while the plain password sits in the file. The
file shows it: an encrypted element is a mapping `{secure: <ciphertext>}`, a plain one is text.

Which keys hold secrets comes from the config table (components/config_schema.py). A plain
entry is reported with the file, the key, the entry index and the command that encrypts it;
the plain value itself is never shown.

Usage: python -m stack_files [Pulumi.<stack>.yaml ...]  (default: every stack file of the
project). Exit status 1 when a file holds a plain secret.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # no stubs in requirements-dev.txt

from components.config_schema import KEYS, PROJECT, Key

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PlainSecret:
    """One secret value (or one entry of a secret list) stored in plain text."""

    file: Path
    stack: str
    key: Key
    index: int | None  # None: the whole value (a string key, or a list with no encrypted entry)
    mixed: bool  # other entries of the same list are encrypted

    @property
    def where(self) -> str:
        return self.key.ref if self.index is None else f"{self.key.ref}[{self.index}]"

    @property
    def fix(self) -> str:
        path = f"--path '{self.where}'" if self.index is not None else self.key.ref
        example = self.key.example or "<value>"
        return f"pulumi config set --stack {self.stack} --secret {path} {example}"

    def message(self) -> str:
        if self.mixed:
            why = f"entry {self.index} of {self.key.ref} is plain text while other entries are encrypted"
        elif self.index is not None:
            why = f"entry {self.index} of {self.key.ref} is plain text"
        else:
            why = f"{self.key.ref} is plain text"
        return (
            f"{self.file.name}: {why}, so the secret sits in the file as written "
            f"(the engine still marks the whole key secret, so the program cannot tell). "
            f"Encrypt it: {self.fix}"
        )


def is_encrypted(value: Any) -> bool:
    """`{secure: <ciphertext>}` is how the CLI writes an encrypted value or list element."""
    return isinstance(value, dict) and set(value) == {"secure"}


def stack_name(file: Path) -> str:
    """`Pulumi.dev.yaml` -> `dev`."""
    return file.name.removeprefix("Pulumi.").removesuffix(".yaml")


def secret_value(config: dict[str, Any], key: Key) -> Any:
    """The stack file's value of a secret key, under `registry-stack:<key>` (or bare)."""
    for name in (key.ref, key.name):
        if name in config:
            return config[name]
    return None


def plain_secrets_in(file: Path) -> list[PlainSecret]:
    """Every secret of the config table that `file` holds in plain text."""
    data = yaml.safe_load(file.read_text()) or {}
    config = data.get("config") or {}
    found: list[PlainSecret] = []
    for key in KEYS:
        if not key.secret:
            continue
        value = secret_value(config, key)
        if value is None or is_encrypted(value):
            continue
        stack = stack_name(file)
        if isinstance(value, list):
            encrypted = [is_encrypted(entry) for entry in value]
            mixed = any(encrypted)
            found += [
                PlainSecret(file, stack, key, index, mixed)
                for index, entry_encrypted in enumerate(encrypted)
                if not entry_encrypted
            ]
        elif value != "" and value != []:
            found.append(PlainSecret(file, stack, key, None, False))
    return found


def stack_files(root: Path = ROOT) -> list[Path]:
    return sorted(root.glob("Pulumi.*.yaml"))


def main(argv: list[str]) -> int:
    files = [Path(arg) for arg in argv] or stack_files()
    problems = [problem for file in files for problem in plain_secrets_in(file)]
    for problem in problems:
        print(f"check-stack-files: {problem.message()}", file=sys.stderr)
    if problems:
        return 1
    names = ", ".join(file.name for file in files) or "none found"
    print(f"check-stack-files: no plain-text secrets of {PROJECT} in {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
