"""`cacheMaxSize`: the size cap of each cache, from text such as "50GiB" to bytes.

The cap itself is kept by the agent (components/agent_app/eviction.py), which removes the
least recently pulled images of a cache past it. Here only the parsing and its errors, so
settings.py can refuse a bad value before anything is created.
"""

from __future__ import annotations

import re

from .config_schema import key

# Binary units (what `du -h` and Docker show) and decimal ones (what disks are sold in).
UNITS: dict[str, int] = {
    "B": 1,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
}
# Smaller than this holds hardly one image: a typo ("50" for "50GiB") rather than a wish.
MIN_CAP_BYTES = 2**20
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([A-Za-z]+)$")


def parse_size(value: str) -> int:
    """Bytes of "50GiB", "500MiB", "1.5TB"; 0 for "" (no cap). A ConfigError names the fix."""
    text = value.strip()
    if not text:
        return 0
    match = _SIZE.match(text)
    if not match:
        raise key("cacheMaxSize").invalid(
            value, 'expected a size such as "50GiB" or "500MiB" (a number and a unit), or "" for no cap'
        )
    number, unit = match.groups()
    canonical = next((u for u in UNITS if u.lower() == unit.lower()), None)
    if canonical is None:
        raise key("cacheMaxSize").invalid(value, f"unknown unit {unit!r}: use one of {', '.join(UNITS)}")
    size = int(float(number) * UNITS[canonical])
    if size < MIN_CAP_BYTES:
        raise key("cacheMaxSize").invalid(
            value, f"a cap of {size} bytes holds hardly one image: give at least 1MiB (most sites want GiB)"
        )
    return size
