"""Durations as people type them: 90s, 15m, 1h, 30d, or plain seconds."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^(\d+)([smhd]?)$")


def parse_duration(text: str) -> int:
    match = _PATTERN.match(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write e.g. 90s, 15m, 1h or 30d")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]
