"""The build-registry cleanup keys (buildCleanup, buildKeep*, buildProtectedTags), validated.

Pure: values in, `CleanupSettings` out, or a ConfigError naming the key, the value and the fix.
What the rules mean is carried out in the build container (components/build_cleanup.sh).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config_schema import ConfigError, key, ref

MANUAL = "manual"
_DAILY_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
# "<tag glob>" or "<repository glob>:<tag glob>": the characters of distribution's repository
# names ([a-z0-9._/-]) and tags ([A-Za-z0-9_.-]) plus the globs * and ?. Nothing a shell would
# read as anything but a pattern, so the script may use it as a `case` pattern as it is.
_TAG_GLOB = r"[A-Za-z0-9_.*?-]{1,128}"
_PROTECTED = re.compile(rf"^([a-z0-9._/*?-]{{1,255}}:)?{_TAG_GLOB}$")


@dataclass(frozen=True)
class CleanupSettings:
    """buildCleanup: "" (off), "manual" (on demand only) or a daily UTC time "HH:MM"."""

    schedule: str = ""
    keep_tags: int = 10
    keep_days: int = 30
    protected: tuple[str, ...] = ("latest",)

    @property
    def enabled(self) -> bool:
        return self.schedule != ""

    @property
    def daily_time(self) -> str:
        """The daily time, or "" when the cleanup runs only on demand (or not at all)."""
        return "" if self.schedule in ("", MANUAL) else self.schedule


def read_cleanup(schedule: str, keep_tags: int, keep_days: int, protected: list[str]) -> CleanupSettings:
    """The cleanup keys' typed values (config_schema already checked types and ranges)."""
    value = schedule.strip().lower()
    if value not in ("", MANUAL) and not _DAILY_TIME.match(value):
        raise key("buildCleanup").invalid(
            schedule,
            'expected "" (off), "manual" (only on demand: registry-stack-cleanup now) or a daily UTC time '
            '"HH:MM" such as "03:00"',
        )
    return CleanupSettings(
        schedule=value, keep_tags=keep_tags, keep_days=keep_days, protected=_protected(protected)
    )


def _protected(patterns: list[str]) -> tuple[str, ...]:
    for index, pattern in enumerate(patterns):
        if not _PROTECTED.match(pattern):
            raise ConfigError(
                f"{ref('buildProtectedTags')}[{index}]={pattern!r} is invalid: expected a tag glob such as "
                '"latest", "v*" or "release-*", or "<repository glob>:<tag glob>" such as "team/*:stable" '
                "(letters, digits, '.', '_', '-', '/' in the repository part, and the globs * and ?)"
            )
    return tuple(dict.fromkeys(patterns))
