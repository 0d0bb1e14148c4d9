"""structlog feeding the stdlib handler that the LiveKit CLI installs.

Rule: we add no handler of our own where the LiveKit CLI runs. The last processor is
`render_to_log_kwargs`, so the event name becomes the log message and the fields travel as `extra`
through the CLI's handler (JSON in `start`) and, in job processes, through the library's log queue
to the parent, which stamps job_id, room, room_id and agent_name. Field values must be picklable
and JSON-able; secrets and transcript text never go in at info level. Every module logs through
`log = get_logger(__name__)` (below: safe whatever the configuration and whenever it was made),
with a static dotted event name and ids and counts as fields. A process of ours that runs without
the LiveKit CLI (`python -m agent watch`) has nothing to render those records: after
`configure_logging` it calls `install_json_lines`, the one handler we add, which writes the same
records (the event name, the fields) as one JSON object a line on stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

import structlog

# The library logs each turn's text at DEBUG (lk.pii.text): keep it at INFO or above.
LIBRARY_LOGGERS = ("livekit.agents", "livekit.plugins.openai", "livekit.plugins.silero")
# Keys the parent process owns on job records (it overwrites them) or stdlib LogRecord owns.
RESERVED_KEYS = frozenset(
    {"job_id", "room", "room_id", "agent_name", "name", "msg", "args", "message", "levelname"}
)


def _guard_reserved(
    _logger: object, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    # A reserved key in `extra` makes stdlib raise KeyError; keep the value under another name.
    for key in RESERVED_KEYS.intersection(event_dict):
        event_dict[f"field_{key}"] = event_dict.pop(key)
    return event_dict


def configure_logging(level: str) -> None:
    """Idempotent; called from `__main__` and from prewarm (job processes skip `__main__`)."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            _guard_reserved,
            structlog.stdlib.render_to_log_kwargs,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    logging.getLogger("agent").setLevel(level)
    library_level = max(logging.INFO, logging.getLevelName(level))
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """The one logging idiom of this project: `log = get_logger(__name__)` at module level.

    The proxy is never cached (`cache_logger_on_first_use=False` for it alone), so each call
    assembles its logger from structlog's configuration at that moment: a module logger used
    before `configure_logging` (or before the journal CLI's own configuration, or a test's)
    still follows the configuration made later. Assembling costs one stdlib logger lookup per
    event, nothing next to the handler's work."""
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        None, logger_factory_args=(name,), cache_logger_on_first_use=False
    )
    return logger


class JsonLinesFormatter(logging.Formatter):
    """One JSON object a line: `time` (the formatter's default, local time), `level` (lower
    case), `event` (the message: a structlog event name) and each field the event carried (the
    record's `extra`); a value JSON has no form for is written as its `str`."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                line[key] = value
        return json.dumps(line, default=str)


def install_json_lines(stream: TextIO | None = None) -> logging.Handler:
    """For a process of ours that the LiveKit CLI does not run (`python -m agent watch`): a
    handler on the root logger writing `JsonLinesFormatter` lines to `stream` (stderr when None),
    and the root logger at INFO, so the libraries' records come out as JSON lines too. Call it
    once, after `configure_logging` (which sets our loggers' level); returns the handler."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonLinesFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler
