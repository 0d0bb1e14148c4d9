"""The settings of `python -m agent watch` (agent/ops/watch): the re-dispatcher for
self-hosted LiveKit.

Rule: `watch` talks to the LiveKit server API and nothing else, so it validates the LiveKit
credentials, the agent name it re-dispatches and its own timing, never OpenAI's or the backend's
variables; the text and URL rules are the worker's (agent.config.fields, agent.endpoints). A
failure raises `SettingsError` naming the watcher as what cannot start.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.config.fields import AgentName, LogLevel, SecretText, Text
from agent.config.hints import SettingsError, problems_from
from agent.endpoints import check_livekit_url

# `python -m agent watch` (agent.ops.watch): the re-dispatcher for self-hosted LiveKit.
WATCH_COMMAND = "watch"


class WatchSettings(BaseSettings):
    """`watch` talks to the LiveKit server API and nothing else: the LiveKit credentials and the
    agent name it re-dispatches are required, OpenAI and the backend are not read at all."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    livekit_url: str = Field(min_length=1, alias="LIVEKIT_URL")
    livekit_api_key: Text = Field(alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretText = Field(alias="LIVEKIT_API_SECRET")
    agent_name: AgentName = Field(alias="AGENT_NAME")
    # >= 0.5 s: each look lists every room, and the participants of each, through the LiveKit
    # server API; faster only loads that API (the grace window is seconds anyway)
    watch_interval_seconds: float = Field(
        default=5.0, ge=0.5, le=300, alias="WATCH_INTERVAL_SECONDS"
    )
    # >= 1 s: a dispatch's agent needs about a second to join; with no grace at all a room is
    # re-dispatched before its first agent could, and two agents answer one caller
    watch_grace_seconds: float = Field(default=10.0, ge=1, le=3600, alias="WATCH_GRACE_SECONDS")
    watch_max_redispatch: int = Field(default=3, ge=0, le=100, alias="WATCH_MAX_REDISPATCH")
    metrics_port: int | None = Field(default=None, ge=0, le=65535, alias="METRICS_PORT")
    # Railway injects PORT and its deploy-time healthcheck (railway.toml's `/`) calls it: the
    # watcher answers there like the worker's health server does; unset, it serves nothing.
    port: int | None = Field(default=None, ge=0, le=65535, alias="PORT")
    log_level: LogLevel = Field(default="INFO", alias="LOG_LEVEL")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("metrics_port", "port", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("livekit_url")
    @classmethod
    def _check_livekit_url(cls, value: str) -> str:
        return check_livekit_url(value)


def load_watch_settings(env_file: str | Path | None = ".env") -> WatchSettings:
    """Validate the watcher's environment once. Raises SettingsError naming every bad variable."""
    try:
        return WatchSettings(_env_file=env_file)
    except ValidationError as error:
        raise SettingsError(problems_from(error), subject="the watcher") from None
