"""Settings from the environment and `.env`, validated once at boot.

Rule: nothing reads `os.environ` after `load_settings()`; the validated `Settings` object is passed
explicitly to the server, the plugins and the backend client. Secrets are `SecretStr` so a repr or a
log line never shows them, and a validation failure is reported by variable name, never by value.
Each URL and header-key rule is one function in agent.endpoints that the clients apply too, so
nothing that passes boot is refused on the first call. Every other text setting (a key, a secret,
a name, a model, a path) is a `Text`/`SecretText`/`TextPath`: one line of printable text with
nothing around it, refused (never stripped) otherwise.

Modules: fields (the field types and their text checks), settings (`Settings`: the fields, their
validators, the derived values), hints (how to fix each variable, `SettingsError`), commands
(`load_settings`: which model each command validates, `check_data_dir`), watch (`WatchSettings`,
`load_watch_settings`: the watcher's own). Import from here: `from agent.config import Settings`.
"""

from agent.config.commands import (
    JOURNAL_COMMAND,
    JOURNAL_RETRY_COMMAND,
    RUN_COMMANDS,
    JournalRetrySettings,
    JournalSettings,
    StartSettings,
    check_data_dir,
    load_settings,
)
from agent.config.fields import AgentName, HeaderSecret, LogLevel, SecretText, Text, TextPath
from agent.config.hints import HINTS, WATCH_HINTS, SettingsError
from agent.config.settings import MIN_JOB_MEMORY_LIMIT_MB, Settings
from agent.config.watch import WATCH_COMMAND, WatchSettings, load_watch_settings

__all__ = [
    "HINTS",
    "JOURNAL_COMMAND",
    "JOURNAL_RETRY_COMMAND",
    "MIN_JOB_MEMORY_LIMIT_MB",
    "RUN_COMMANDS",
    "WATCH_COMMAND",
    "WATCH_HINTS",
    "AgentName",
    "HeaderSecret",
    "JournalRetrySettings",
    "JournalSettings",
    "LogLevel",
    "SecretText",
    "Settings",
    "SettingsError",
    "StartSettings",
    "Text",
    "TextPath",
    "WatchSettings",
    "check_data_dir",
    "load_settings",
    "load_watch_settings",
]
