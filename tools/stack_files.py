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

`python -m stack_files --configured <stack>` answers whether Pulumi.<stack>.yaml has what a
preview needs (users where the build registry runs, acmeEmail in the letsencrypt modes): exit 0
if so, else a GitHub `::notice` naming the missing key and the command that sets it, and exit
status 3 (NOT_CONFIGURED), so CI can skip that stack's preview and say why.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # no stubs in requirements-dev.txt

from components.config_schema import BY_NAME, KEYS, PROJECT, ConfigError, Key

ROOT = Path(__file__).resolve().parent.parent
NOT_CONFIGURED = 3


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
    """`{secure: <ciphertext>}` is how the CLI writes an encrypted value or list element
    (pulumi/pulumi sdk/go/common/resource/config/object.go `isSecureValue`: a one-key map
    whose `secure` is a string)."""
    return isinstance(value, dict) and set(value) == {"secure"} and isinstance(value["secure"], str)


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


@dataclass(frozen=True)
class MissingKey:
    """A key the stack needs before a preview can succeed, and the command that sets it."""

    key: Key
    why: str
    command: str


def _value(config: dict[str, Any], name: str) -> Any:
    """The typed value of a key as the program would see it: the stack's, else the default."""
    return BY_NAME[name].coerce(secret_value(config, BY_NAME[name]))


def missing_keys(file: Path) -> list[MissingKey]:
    """What the program would refuse for lack of it. A mistyped value counts as present: the
    preview then runs and shows the CLI's own message."""
    config = (yaml.safe_load(file.read_text()) or {}).get("config") or {}
    stack = stack_name(file)
    missing: list[MissingKey] = []
    try:
        users_key, email_key = BY_NAME["users"], BY_NAME["acmeEmail"]
        users, enable_build = secret_value(config, users_key), _value(config, "enableBuild")
        if enable_build and users in (None, [], ""):
            missing.append(MissingKey(
                users_key, "enableBuild is true and no users are set",
                f"pulumi config set --stack {stack} --secret --path '{users_key.ref}[0]' '<name>:<password>'",
            ))
        if _value(config, "tlsMode").startswith("letsencrypt") and not _value(config, "acmeEmail"):
            missing.append(MissingKey(
                email_key, "the letsencrypt modes need a contact email",
                f"pulumi config set --stack {stack} {email_key.ref} <you@example.com>",
            ))
    except ConfigError:
        return []
    return missing


def report_configured(stack: str, root: Path = ROOT) -> int:
    """Exit status for `--configured`: 0, or NOT_CONFIGURED after one notice per missing key."""
    file = root / f"Pulumi.{stack}.yaml"
    missing = missing_keys(file)
    for item in missing:
        # A GitHub Actions workflow command (stdout): shown as a notice on the run's summary.
        print(
            f"::notice title=stack {stack} not yet configured::{file.name}: {item.key.ref} is missing "
            f"({item.why}), so {stack} is skipped. Set it with: {item.command}"
        )
    if missing:
        return NOT_CONFIGURED
    print(f"check-stack-files: stack {stack} is configured")
    return 0


def stack_files(root: Path = ROOT) -> list[Path]:
    return sorted(root.glob("Pulumi.*.yaml"))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--configured"] and len(argv) == 2:
        return report_configured(argv[1])
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
