"""The text of `python -m agent journal`: ages, one-line fields, tables and outcome lines,
shared by its calls' part (journal_cli) and its recordings' part (journal_recordings).

Rule: every field from the journal or the backend is printed on one line and capped, so that a
reason with newlines or control characters can neither break a table nor forge a line.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_ERROR_CHARS = 80
MAX_ID_CHARS = 64


def human_age(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def one_line(text: str | None, limit: int) -> str:
    """Control characters and runs of whitespace become one space; at most `limit` chars."""
    if not text:
        return "-"
    flat = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def print_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell; the last one (free text) left as it is."""
    table = [header, *lines]
    widths = [max(len(line[column]) for line in table) for column in range(len(header) - 1)]
    for line in table:
        padded = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        print("  ".join([*padded, line[-1]]).rstrip())


def outcome_line(name: str, status: str, detail: str, *, delivered: str, already: str) -> str:
    """One line per retried item (`name`, already one line): what happened and where it is now.
    `delivered` and `already` complete the two delivered outcomes' lines."""
    detail = one_line(detail, MAX_ERROR_CHARS)
    if status == "delivered":
        return f"{name}: delivered ({delivered})"
    if status == "already_delivered":
        return f"{name}: already delivered ({already})"
    if status == "deferred":
        return f"{name}: deferred ({detail}): kept pending; the worker's recovery retries it"
    if status == "rejected":
        return f"{name}: rejected ({detail}): kept as a dead letter"
    if status == "misconfigured":
        return (
            f"{name}: backend configuration error ({detail}): check BACKEND_URL and "
            "INTERNAL_SERVICE_KEY; kept pending"
        )
    return f"{name}: {status} ({detail})"
