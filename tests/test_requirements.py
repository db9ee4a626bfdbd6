"""requirements.txt pins what the program relies on from its providers."""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def requirement(name: str) -> Requirement:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text and Requirement(text).name == name:
            return Requirement(text)
    raise AssertionError(f"{name} is not in requirements.txt")


def test_pulumi_docker_5_or_later_is_required():
    # 4.5 and 4.6 delete a stopped container on refresh when must_run is set (kreuzwerker 3.0.x).
    spec = requirement("pulumi-docker").specifier
    assert not spec.contains("4.6.2") and not spec.contains("4.5.0")
    assert spec.contains("5.2.0")
