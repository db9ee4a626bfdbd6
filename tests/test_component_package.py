"""The component package (PulumiPlugin.yaml, components/plugin.py), tested without the Pulumi CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from components import plugin
from tests.harness import declare

ROOT = Path(__file__).resolve().parent.parent


def test_the_plugin_runs_in_the_programs_virtualenv_with_python() -> None:
    manifest = yaml.safe_load((ROOT / "PulumiPlugin.yaml").read_text())
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"
    # One virtualenv for both: `pulumi install` and `pulumi package add` fill the same one.
    assert manifest["runtime"]["options"] == project["runtime"]["options"]


def test_a_process_without_a_resource_monitor_is_the_plugin() -> None:
    # The language host starts a plugin as `python <folder> <engine address>`, with nothing
    # configured (pulumi-language-python main.go RunPlugin); a program always has a monitor
    # (pulumi-language-python-exec configures it before running __main__.py).
    fresh = subprocess.run(
        [sys.executable, "-c", "from components.plugin import launched_as_plugin; print(launched_as_plugin())"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert fresh.stdout.strip() == "True"


def test_the_program_under_a_monitor_is_not_the_plugin() -> None:
    declaration = declare({"enableBuild": False})
    assert not plugin.launched_as_plugin()
    assert declaration.outputs["cacheUrl"].startswith("https://docker-cache.")
