"""`python3 /opt/registry-agent/agent_app <config.json>`: run the agent.

Run as a folder, Python puts the folder itself on sys.path; its parent goes there too so
the modules import each other as the package `agent_app`, as they do in the tests.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: agent_app <config.json>\n")
        return 2
    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    server = importlib.import_module("agent_app.server")
    server.serve(server.load_config(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
