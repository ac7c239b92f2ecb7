"""Helpers for error messages."""

import json


def quoted(text: str) -> str:
    """Return `text` in double quotes, with JSON escapes for quotes, backslashes
    and control characters, as the host's other plugins show values."""
    return json.dumps(text, ensure_ascii=False)
