"""log.py: structlog hands events to the stdlib handler the LiveKit CLI installs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from livekit.agents.cli.log import JsonFormatter

from agent.log import configure_logging, get_logger, install_json_lines


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collected() -> Iterator[Collect]:
    handler = Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        structlog.reset_defaults()


def test_event_name_is_the_message_and_fields_travel_as_extra(collected: Collect) -> None:
    configure_logging("INFO")
    get_logger("agent.test").info("backend.request_failed", status=503, attempt=2)
    [record] = [r for r in collected.records if r.name == "agent.test"]
    assert record.getMessage() == "backend.request_failed"
    assert (record.status, record.attempt) == (503, 2)  # type: ignore[attr-defined]
    rendered = json.loads(JsonFormatter().format(record))
    assert rendered["message"] == "backend.request_failed" and rendered["status"] == 503


def test_reserved_keys_are_renamed_instead_of_breaking_logging(collected: Collect) -> None:
    configure_logging("INFO")
    get_logger("agent.test").info("call.started", room="r1", name="n", job_id="j")
    [record] = [r for r in collected.records if r.name == "agent.test"]
    assert record.field_room == "r1" and record.field_name == "n"  # type: ignore[attr-defined]


def test_debug_for_us_keeps_the_library_at_info() -> None:
    configure_logging("DEBUG")
    assert logging.getLogger("agent").level == logging.DEBUG
    assert logging.getLogger("livekit.agents").level == logging.INFO
    structlog.reset_defaults()


def test_no_handler_of_our_own_is_added() -> None:
    before = list(logging.getLogger().handlers)
    configure_logging("INFO")
    assert logging.getLogger().handlers == before
    assert logging.getLogger("agent").handlers == []
    structlog.reset_defaults()


def test_a_module_logger_follows_a_configuration_made_after_its_first_use(
    collected: Collect,
) -> None:
    # `log = get_logger(__name__)` at module level is the one idiom. With
    # cache_logger_on_first_use a logger used once keeps that configuration's logger factory
    # and wrapper for ever: a later configuration (the journal CLI prints to stderr) would
    # never see its events.
    log = get_logger("agent.test")
    configure_logging("INFO")
    log.info("call.first")
    printed = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
        logger_factory=structlog.PrintLoggerFactory(printed),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    log.info("call.second", turn_count=2)
    assert printed.getvalue() == "event='call.second' turn_count=2\n"
    assert [r.getMessage() for r in collected.records if r.name == "agent.test"] == ["call.first"]


def test_a_process_without_the_livekit_cli_writes_json_lines() -> None:
    # `python -m agent watch`: the one handler we add, event name under `event`, fields beside
    root = logging.getLogger()
    level = root.level
    printed = io.StringIO()
    configure_logging("INFO")
    handler = install_json_lines(printed)
    try:
        get_logger("agent.test").warning("watch.api_error", status=None, failures=2)
        get_logger("agent.test").debug("watch.quiet")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()
    [line] = [json.loads(text) for text in printed.getvalue().splitlines()]
    # (a subset: pytest's own handler formats the record first, which adds `message`)
    assert {"time", "level", "event", "status", "failures"} <= set(line)
    assert (line["level"], line["event"], line["status"], line["failures"]) == (
        "warning",
        "watch.api_error",
        None,
        2,
    )
