"""Which settings each command validates, and how: `load_settings` and the boot checks.

Rule: the environment is validated once, by the model of the command that runs (`start` needs an
explicit agent name; the journal's commands read only their own variables, so an operator can
look at the journal of a worker whose other settings are wrong). A failure raises
`SettingsError` naming every bad variable. Only `RUN_COMMANDS` need credentials; a worker checks
its data directory (`check_data_dir`) before it takes a call.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import SettingsConfigDict

from agent.config.fields import AgentName, LoopBlockMs
from agent.config.hints import HINTS, SettingsError, problems_from
from agent.config.settings import LOOP_BLOCK_WARN_ENV, Settings

# The commands that run a worker or a job and therefore need credentials.
RUN_COMMANDS = frozenset({"dev", "start", "console", "connect"})


class StartSettings(Settings):
    """`start` takes production calls: it must dispatch by an explicit agent name, and it does
    not pay for the library's event-loop monitor unless asked (a fifth of a call's CPU)."""

    agent_name: AgentName = Field(alias="AGENT_NAME")
    loop_block_warn_ms: LoopBlockMs = Field(default=0, alias=LOOP_BLOCK_WARN_ENV)


# `python -m agent journal ...` (agent/ops/journal_cli.py): the operator's commands.
JOURNAL_COMMAND = "journal"
JOURNAL_RETRY_COMMAND = "journal-retry"


class JournalSettings(Settings):
    """`journal status|list|export` read AGENT_DATA_DIR and nothing else. Every other variable
    is ignored, not validated: an operator must be able to look at the journal of a worker whose
    LiveKit or OpenAI settings are missing or wrong. The credential fields get defaults that
    nothing on this path reads (defaults are not validated here, so they may be empty)."""

    model_config = SettingsConfigDict(validate_default=False)
    USED: ClassVar[frozenset[str]] = frozenset({"AGENT_DATA_DIR"})

    livekit_url: str = Field(default="", alias="LIVEKIT_URL")
    livekit_api_key: str = Field(default="", alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretStr = Field(default=SecretStr(""), alias="LIVEKIT_API_SECRET")
    openai_api_key: SecretStr = Field(default=SecretStr(""), alias="OPENAI_API_KEY")

    @model_validator(mode="before")
    @classmethod
    def _only_used(cls, data: object) -> object:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if str(key).upper() in cls.USED}
        return data


class JournalRetrySettings(JournalSettings):
    """`journal retry` also posts transcripts: the backend pair (or its absence: the embedded
    default) and the delivery budget, validated by the same rules as the worker's."""

    USED: ClassVar[frozenset[str]] = frozenset(
        {
            "AGENT_DATA_DIR",
            "BACKEND_URL",
            "INTERNAL_SERVICE_KEY",
            "BACKEND_TIMEOUT",
            "DELIVERY_DEADLINE",
        }
    )


def check_data_dir(settings: Settings) -> None:
    """The journal must open (a writable directory, WAL allowed) before we take calls: every job
    process opens it in prewarm, and a worker whose jobs cannot start would keep accepting
    calls it can never serve."""
    from agent.journal import Journal

    try:
        Journal.in_dir(settings.agent_data_dir).close()
    except Exception as error:
        raise SettingsError(
            {
                "AGENT_DATA_DIR": f"the journal cannot be opened there ({type(error).__name__}: "
                f"{error}) (set it to {HINTS['AGENT_DATA_DIR']})"
            }
        ) from None


def load_settings(command: str | None = None, env_file: str | Path | None = ".env") -> Settings:
    """Validate the environment once. Raises SettingsError naming every bad variable."""
    models: dict[str | None, type[Settings]] = {
        "start": StartSettings,
        JOURNAL_COMMAND: JournalSettings,
        JOURNAL_RETRY_COMMAND: JournalRetrySettings,
    }
    model = models.get(command, Settings)
    try:
        return model(_env_file=env_file)
    except ValidationError as error:
        raise SettingsError(problems_from(error)) from None
