"""The field types of the settings: each applies one of agent.endpoints' text rules by its
declaration.

Rule: every text setting (a key, a secret, a name, a model, a path) is a `Text`/`SecretText`/
`TextPath`: one line of printable text with nothing around it, refused (never stripped)
otherwise. The check runs on the raw text, before any length or type check, and its message
says what is wrong, never the value.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr

from agent.endpoints import header_secret_problem, text_problem

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _checked(problem_of: Callable[[str], str | None]) -> BeforeValidator:
    """A validator that applies one of agent.endpoints' text rules to the raw text, before any
    length or type check, so the message says what is wrong with it. The error's location names
    the variable; the message says what is wrong, never the value."""

    def check(value: object) -> object:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, str) and (problem := problem_of(text)) is not None:
            raise ValueError(problem)
        return value

    return BeforeValidator(check)


# The text rule (agent.endpoints.text_problem) as types, so every such setting gets it by its
# declaration: an empty LIVEKIT_API_SECRET otherwise ends in a library traceback, and a trailing
# newline in a 401 loop; a model or voice name with one fails every call.
Text = Annotated[str, _checked(text_problem)]
SecretText = Annotated[SecretStr, _checked(text_problem)]
# sent in an HTTP header on every request (OPENAI_API_KEY, INTERNAL_SERVICE_KEY): also ASCII
HeaderSecret = Annotated[SecretStr, _checked(header_secret_problem)]
# a directory: "/data\n" would put the journal beside the volume, not on it
TextPath = Annotated[Path, _checked(text_problem)]
# what LiveKit dispatches by (AGENT_NAME): the worker's, `start`'s and the watcher's one rule
AgentName = Annotated[str, Field(max_length=128), _checked(text_problem)]

# the library's event-loop monitor threshold (LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS); 0 turns it off.
# One type, because `start` gives it another default (agent.config.commands.StartSettings)
LoopBlockMs = Annotated[float, Field(ge=0, le=60_000)]
