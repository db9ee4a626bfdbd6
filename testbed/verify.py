"""scripts/verify run against a realized stack, as a user runs it after `pulumi up`."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

from testbed.stack import RealizedStack
from tests.harness import ROOT

VERIFY = ROOT / "scripts" / "verify"


def run_verify(
    stack: RealizedStack, folder: Path, *args: str, password: str | None = None, outputs: dict | None = None
) -> subprocess.CompletedProcess:
    outputs_file = folder / f"outputs-{secrets.token_hex(3)}.json"
    outputs_file.write_text(json.dumps(stack.outputs if outputs is None else outputs))
    env = {**os.environ, "REGISTRY_STACK_PASSWORD": stack.password if password is None else password}
    return subprocess.run(
        [str(VERIFY), "--outputs", str(outputs_file), *args],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=300, check=False,
    )


def check_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.split()[0] in ("PASS", "FAIL", "SKIP")]
