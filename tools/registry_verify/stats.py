"""`verify --stats`: what the caches hold and serve, as tables a person reads at a glance.

Reads `/stats` of the stack's metrics endpoint (the `metricsUrl` output, or `--metrics-url`):
the agent's JSON with, per registry, distribution's proxy counters (hits, misses, bytes
fetched upstream), the bytes stored, the cap (`cacheMaxSize`) and the images pulled most
(counted in the front's access log). Plain HTTP: the endpoint answers listed networks only.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, TextIO

from registry_verify.outputs import UsageError

UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def fetch_stats(metrics_url: str, timeout: float) -> dict[str, Any]:
    if not metrics_url:
        raise UsageError(
            "the stack has no metrics endpoint (the metricsUrl output is empty): set metricsPort and "
            "metricsClientNetworks and run `pulumi up`, or pass --metrics-url http://HOST:PORT"
        )
    url = f"{metrics_url.rstrip('/')}/stats"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            stats: dict[str, Any] = json.loads(answer.read())
    except urllib.error.HTTPError as error:
        hint = " (is this machine's network in metricsClientNetworks?)" if error.code == 403 else ""
        raise UsageError(f"{url} answered HTTP {error.code}{hint}") from None
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {url}: {error}") from None
    return stats


def human_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in UNITS:
        if size < 1024 or unit == UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # not reached


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """Columns padded to their widest cell; the columns in `right` aligned right (numbers)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                                   strict=True))]
        return "  ".join(padded).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(row) for row in rows)]


def _cache_columns(registry: dict[str, Any]) -> tuple[str, str, str]:
    """hit ratio and misses/requests (of manifests: one per image pulled), bytes fetched upstream."""
    proxy = registry.get("proxy") or {}
    if not proxy:
        return "?", "unreadable", "?"
    manifest = proxy.get("manifest", {})
    ratio = registry.get("hitRatio")
    shown = "-" if ratio is None else f"{100 * ratio:.1f}%"
    pulled = sum(kind.get("pulled_bytes", 0) for kind in proxy.values())
    return shown, f"{manifest.get('misses', 0)}/{manifest.get('requests', 0)}", human_bytes(pulled)


def render(stats: dict[str, Any]) -> list[str]:
    rows = []
    for registry in stats.get("registries", []):
        if registry.get("kind") == "cache":
            ratio, missed, upstream = _cache_columns(registry)
        else:
            ratio, missed, upstream = "-", "-", "-"
        cap = registry.get("capBytes") or 0
        rows.append([registry.get("name", "?"), registry.get("kind", "?"), ratio, missed, upstream,
                     human_bytes(registry.get("storedBytes")), human_bytes(cap) if cap else "none"])
    lines = table(["registry", "kind", "hit ratio", "misses/pulls", "from upstream", "stored", "cap"], rows,
                  right=(2, 3, 4, 5, 6))
    pulls = [[registry["name"], entry["repository"], str(entry["pulls"])]
             for registry in stats.get("registries", []) for entry in registry.get("topPulls", [])]
    lines.append("")
    if pulls:
        pulls.sort(key=lambda row: (-int(row[2]), row[0], row[1]))
        lines.append("top images by pulls (since the oldest access log the front keeps)")
        lines += table(["registry", "repository", "pulls"], pulls, right=(2,))
    else:
        lines.append("top images by pulls: none yet")
    return lines


def print_stats(metrics_url: str, timeout: float, out: TextIO) -> int:
    for line in render(fetch_stats(metrics_url, timeout)):
        print(line, file=out)
    return 0
