"""Prompt files under prompts/: a tiny cached loader and the bundled scenario parser.

Rule: prompt text lives in prompts/*.md, never in code. Every name is listed in `PromptName` so a
test can load each one; a missing or empty file is a clear `PromptError`, not a KeyError at call
time.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Literal, get_args

from agent.models import Scenario

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
DEFAULT_SCENARIO_ID = "default"

PromptName = Literal["system", "greeting", "apology", "llm_error", "closing", "resume"]
PROMPT_NAMES: tuple[str, ...] = get_args(PromptName)

_SCENARIO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class PromptError(Exception):
    """A prompt or bundled scenario is missing or malformed."""


def load_prompt(name: PromptName, prompts_dir: Path = PROMPTS_DIR) -> str:
    return _load_prompt(name, prompts_dir)


@functools.cache
def _load_prompt(name: str, prompts_dir: Path) -> str:
    if name not in PROMPT_NAMES:
        raise PromptError(f"unknown prompt {name!r}; known prompts: {', '.join(PROMPT_NAMES)}")
    path = prompts_dir / f"{name}.md"
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise PromptError(f"prompt file {path} is missing (prompt {name!r})") from None
    if not text:
        raise PromptError(f"prompt file {path} is empty (prompt {name!r})")
    return text


def scenario_ids(prompts_dir: Path = PROMPTS_DIR) -> list[str]:
    return sorted(path.stem for path in (prompts_dir / "scenarios").glob("*.md"))


def load_scenario(scenario_id: str, prompts_dir: Path = PROMPTS_DIR) -> Scenario:
    """A bundled scenario: `---` front matter (title, greeting?, voice?, language?), then the
    persona prompt. Cached: the files are part of the image."""
    return _load_scenario(scenario_id, prompts_dir)


@functools.cache
def _load_scenario(scenario_id: str, prompts_dir: Path) -> Scenario:
    """A bundled scenario: `---` front matter (title, greeting?, voice?, language?), then the
    persona prompt."""
    if not _SCENARIO_ID.match(scenario_id):
        raise PromptError(f"invalid scenario id {scenario_id!r}: use letters, digits, - and _")
    path = prompts_dir / "scenarios" / f"{scenario_id}.md"
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        known = ", ".join(scenario_ids(prompts_dir)) or "none"
        raise PromptError(
            f"no bundled scenario {scenario_id!r} ({path} is missing); bundled: {known}"
        ) from None
    header: dict[str, str] = {}
    body = raw
    if raw.startswith("---\n"):
        head, sep, rest = raw[4:].partition("\n---\n")
        if not sep:
            raise PromptError(f"{path}: front matter opened with --- but never closed")
        for line in head.splitlines():
            if line.strip():
                key, colon, value = line.partition(":")
                if not colon:
                    raise PromptError(f"{path}: front matter line {line!r} is not 'key: value'")
                header[key.strip()] = value.strip()
        body = rest
    if "title" not in header:
        raise PromptError(f"{path}: front matter needs a title")
    return Scenario(
        id=scenario_id,
        title=header["title"],
        prompt=body.strip(),
        greeting=header.get("greeting"),
        voice=header.get("voice"),
        language=header.get("language"),
    )
