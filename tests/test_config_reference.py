"""config_schema.py's table of keys, Pulumi.yaml's config block and the README's table agree."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config_schema import KEYS, KNOWN_KEYS, PROJECT, SECRET_KEYS, ConfigError, key
from tests import harness

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PULUMI_TYPES = {"string": str, "integer": int, "boolean": bool, "array": list, "object": dict}


def project_config() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]


def test_pulumi_yaml_declares_exactly_the_known_keys():
    config = project_config()
    assert len(KNOWN_KEYS) == len(set(KNOWN_KEYS))
    assert set(config) == set(KNOWN_KEYS)
    assert list(config) == list(KNOWN_KEYS)  # same order: the README table follows it


@pytest.mark.parametrize("name", KNOWN_KEYS)
def test_pulumi_yaml_declares_each_key_as_the_schema_does(name):
    spec, schema = project_config()[name], key(name)
    assert spec.get("type") == schema.type
    assert spec.get("items", {}).get("type") == schema.items
    assert spec.get("default") == schema.default
    assert spec.get("description") == schema.documented_description
    # `secret: true` needs a key without a default on current CLIs (pulumi/pulumi#21865), so
    # Pulumi.yaml may declare it only where the schema says the key is secret.
    assert spec.get("secret", False) in (False, schema.secret)


@pytest.mark.parametrize("name", KNOWN_KEYS)
def test_each_key_has_type_default_and_description(name):
    spec = project_config()[name]
    assert spec.get("type") in PULUMI_TYPES, f"{name}: type {spec.get('type')!r}"
    assert "default" in spec, f"{name}: no default"
    assert isinstance(spec["default"], PULUMI_TYPES[spec["type"]]), f"{name}: default does not match its type"
    if spec["type"] == "integer":
        assert not isinstance(spec["default"], bool)
    if spec["type"] == "array":
        assert spec.get("items", {}).get("type") in PULUMI_TYPES, f"{name}: array without items.type"
    assert isinstance(spec.get("description"), str) and len(spec["description"].strip()) > 10, name


def _refuses_plain_text(name: str, spec: dict) -> bool:
    sample = ["alice:correct-horse-1"] if spec["type"] == "array" else "sample-value-1234"
    try:
        harness.settings({"enableBuild": False, name: sample})
    except (ConfigError, harness.CliError) as error:
        return "plain text" in str(error)
    return False


def test_secret_keys_are_marked_secret_in_their_description():
    config = project_config()
    refused = {name for name, spec in config.items() if _refuses_plain_text(name, spec)}
    marked = {name for name, spec in config.items() if spec["description"].startswith("(secret)")}
    assert {"users", "upstreamCredentials"} <= refused  # the check finds what it looks for
    assert refused == marked == SECRET_KEYS


@pytest.mark.parametrize("name", KNOWN_KEYS)
def test_pulumi_yaml_default_means_the_same_as_leaving_the_key_unset(name):
    """The CLI applies project defaults to every stack, so the program sees them as values."""
    default = project_config()[name]["default"]
    base: dict[str, Any] = {"users": ["alice:correct-horse-1"]}
    secret_keys = {"users"}
    if name == "users":
        base, secret_keys = {"enableBuild": False}, set()
    unset = harness.settings(base, secret_keys)
    given = harness.settings({**base, name: default}, secret_keys)
    assert given == unset


@pytest.mark.parametrize("stack_file", sorted(ROOT.glob("Pulumi.*.yaml")), ids=lambda p: p.name)
def test_stack_files_use_known_keys(stack_file):
    config = yaml.safe_load(stack_file.read_text()).get("config") or {}
    ours = {k.split(":", 1)[1] for k in config if k.startswith(f"{PROJECT}:")}
    assert ours, f"{stack_file.name} sets no {PROJECT} key"
    assert ours <= set(KNOWN_KEYS), sorted(ours - set(KNOWN_KEYS))


# ---------------------------------------------------------------------------------------
# README
# ---------------------------------------------------------------------------------------

_KEY_CELL = re.compile(r"^`(?:" + re.escape(PROJECT) + r":)?([A-Za-z][A-Za-z0-9]*)`$")
_EMPTY = {"", '""', "''", "empty", "(empty)", "none", "(none)", "-", "—", "–", "n/a"}


def _cells(line: str) -> list[str]:
    inner = line.strip().strip("|")
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", inner)]


def readme_config_table(text: str) -> dict[str, str] | None:
    """{key: default cell} of the markdown table whose first column is backticked key names."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.strip().startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    best: dict[str, str] | None = None
    for block in blocks:
        if len(block) < 3:
            continue
        header = [c.lower() for c in _cells(block[0])]
        default_column = next((i for i, c in enumerate(header) if "default" in c), None)
        if default_column is None:
            continue
        rows: dict[str, str] = {}
        for line in block[2:]:
            cells = _cells(line)
            match = _KEY_CELL.match(cells[0])
            if match and default_column < len(cells):
                assert match.group(1) not in rows, f"README lists {match.group(1)} twice"
                rows[match.group(1)] = cells[default_column]
        if rows and (best is None or len(rows) > len(best)):
            best = rows
    return best


def _default_text(value: Any) -> str:
    """A default as the README shows it: text for scalars, JSON for lists."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _same_default(cell: str, default: Any) -> bool:
    shown = cell.strip()
    if len(shown) >= 2 and shown.startswith("`") and shown.endswith("`"):
        shown = shown[1:-1].strip()
    expected = _default_text(default)
    if expected in ("", "[]") and shown.lower() in _EMPTY | {"[]"}:
        return True
    return shown == expected


def test_readme_config_table_matches_the_schema():
    assert README.exists(), "README.md is missing"
    table = readme_config_table(README.read_text())
    assert table, "README.md has no config table (a markdown table of `key` | ... | default | ...)"
    config = {spec.name: {"default": spec.default} for spec in KEYS}
    assert set(table) == set(config), {
        "missing from README": sorted(set(config) - set(table)),
        "not in Pulumi.yaml": sorted(set(table) - set(config)),
    }
    wrong = {key: (cell, config[key]["default"]) for key, cell in table.items()
             if not _same_default(cell, config[key]["default"])}
    assert wrong == {}


def test_readme_table_parser_sees_a_stale_table():
    # The check above must be able to fail: a table missing a key or with a wrong default.
    text = "\n".join([
        "| key | type | default | description |",
        "|---|---|---|---|",
        "| `httpsPort` | integer | `8443` | x |",
        "| `enableBuild` | boolean | `true` | x |",
    ])
    table = readme_config_table(text)
    assert table == {"httpsPort": "`8443`", "enableBuild": "`true`"}
    assert not _same_default(table["httpsPort"], 443)
    assert _same_default(table["enableBuild"], True)
    assert _same_default('`""`', "")
    assert _same_default("`[]`", [])
    assert readme_config_table("no tables here\n| a | b |\n|---|---|\n| 1 | 2 |\n") is None
