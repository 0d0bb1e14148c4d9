"""Settings for tests: the four required variables with harmless values, plus overrides."""

from __future__ import annotations

from agent.config import Settings

REQUIRED_ENV: dict[str, str] = {
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LIVEKIT_API_KEY": "devkey",
    "LIVEKIT_API_SECRET": "secret_secret_secret_secret_secret_",
    "OPENAI_API_KEY": "sk-test",
}


def make_settings(**overrides: object) -> Settings:
    """Validated like the environment would be (aliases, e.g. PORT="9000"), never reading the
    process environment or a .env file."""
    return Settings.model_validate({**REQUIRED_ENV, **overrides})
