"""The worker's Prometheus series (`voice_agent_*`) and the one function per thing we count.

Rule: every label value comes from a fixed set written here (an unknown value becomes `other`):
never a session id, room, user or text, so a series count cannot grow with traffic. Recording is
an in-memory add (in multiprocess mode an mmap'd file write), never I/O that waits, so it is safe
on the event loop. The series are made on first use (`series()`), not at import: in multiprocess
mode making a series creates its file, and the library clears that directory when the worker
starts. Which mode applies is decided by `PROMETHEUS_MULTIPROC_DIR` before prometheus_client is
first imported (agent/ops/metrics.py), whose endpoint serves them when METRICS_PORT is set.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import get_args

from prometheus_client import Counter, Gauge, Histogram

from agent.models import EndedReason

OTHER = "other"
ENDED_REASONS = frozenset(get_args(EndedReason))
ROLES = frozenset({"user", "assistant"})
# The backend's routes as templates (agent/backend/contract.py): never the ids in the path.
ROUTES = frozenset(
    {
        "/api/internal/scenarios/{scenarioId}",
        "/api/internal/sessions",
        "/api/internal/sessions/{sessionId}",
        "/api/internal/sessions/{sessionId}/transcript",
        "/api/internal/sessions/{sessionId}/recording",
    }
)
STATUS_CLASSES = frozenset({"2xx", "3xx", "4xx", "5xx", "timeout", "error"})
PROVIDER_KINDS = frozenset({"stt", "llm", "tts", "realtime"})
DELIVERY_OUTCOMES = frozenset({"delivered", "duplicate", "retried", "pending", "dead"})
# a checkpoint of a live call (agent/delivery/checkpoint.py): acknowledged (2xx or 409) or not
CHECKPOINT_RESULTS = frozenset({"sent", "failed"})
# where a resumed call's earlier turns came from (agent/call/resume.py)
RESUME_SOURCES = frozenset({"journal", "backend"})
# A provider (a plugin's `provider`: the API host, e.g. api.openai.com) is named by configuration
# (one or two per deployment), not by traffic; still only a short token is kept, so a misbehaving
# plugin cannot put free text in a label.
_PROVIDER = re.compile(r"[a-z0-9][a-z0-9._:-]{0,39}")

# Seconds: a voice turn is good under 1 s and broken over 3 s; the tail buckets show outages.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


@dataclass(frozen=True)
class Series:
    calls_started: Counter
    calls_ended: Counter
    calls_live: Gauge
    turns: Counter
    response_latency: Histogram
    llm_first_token: Histogram
    tts_first_byte: Histogram
    end_of_turn_delay: Histogram
    provider_errors: Counter
    backend_requests: Counter
    deliveries: Counter
    calls_resumed: Counter
    checkpoints: Counter
    recordings: Counter


@functools.cache
def series() -> Series:
    """This process's series, made once (see the module rule for why not at import)."""
    return Series(
        calls_started=Counter("voice_agent_calls_started", "Calls whose session started"),
        calls_ended=Counter(
            "voice_agent_calls_ended", "Calls ended, by endedReason", ["ended_reason"]
        ),
        # livesum: a job process that died stops counting (its file is dropped at scrape time)
        calls_live=Gauge(
            "voice_agent_calls_live", "Calls in progress", multiprocess_mode="livesum"
        ),
        turns=Counter("voice_agent_turns", "Final turns recorded, by role", ["role"]),
        response_latency=Histogram(
            "voice_agent_turn_response_latency_seconds",
            "User end of speech to the agent's first audio, per assistant turn",
            buckets=LATENCY_BUCKETS,
        ),
        llm_first_token=Histogram(
            "voice_agent_llm_first_token_seconds",
            "LLM time to first token, per assistant turn",
            buckets=LATENCY_BUCKETS,
        ),
        tts_first_byte=Histogram(
            "voice_agent_tts_first_byte_seconds",
            "TTS time to first audio byte, per assistant turn",
            buckets=LATENCY_BUCKETS,
        ),
        end_of_turn_delay=Histogram(
            "voice_agent_end_of_turn_delay_seconds",
            "User end of speech to the end-of-turn decision, per user turn",
            buckets=LATENCY_BUCKETS,
        ),
        provider_errors=Counter(
            "voice_agent_provider_errors",
            "Errors reported by the STT/LLM/TTS providers, by provider and kind",
            ["provider", "kind"],
        ),
        backend_requests=Counter(
            "voice_agent_backend_requests",
            "HTTP attempts to the backend, by route template and status class",
            ["route", "status_class"],
        ),
        deliveries=Counter(
            "voice_agent_deliveries",
            "Transcript delivery rounds, by outcome",
            ["outcome"],
        ),
        calls_resumed=Counter(
            "voice_agent_calls_resumed",
            "Calls resumed after their worker died, by where the earlier turns came from",
            ["source"],
        ),
        checkpoints=Counter(
            "voice_agent_checkpoints",
            "Checkpoints of live calls posted to the backend, by result",
            ["result"],
        ),
        recordings=Counter(
            "voice_agent_recordings",
            "Recording upload rounds, by outcome (as deliveries)",
            ["outcome"],
        ),
    )


def _bounded(value: str | None, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


# --------------------------------------------------------------------------- recording


def call_started() -> None:
    s = series()
    s.calls_started.inc()
    s.calls_live.inc()


def call_ended(ended_reason: str | None, *, was_live: bool) -> None:
    s = series()
    s.calls_ended.labels(ended_reason=_bounded(ended_reason, ENDED_REASONS)).inc()
    if was_live:
        s.calls_live.dec()


def turn_recorded(role: str) -> None:
    series().turns.labels(role=_bounded(role, ROLES)).inc()


def assistant_turn_latency(
    *, response: float | None, llm_first_token: float | None, tts_first_byte: float | None
) -> None:
    s = series()
    for histogram, value in (
        (s.response_latency, response),
        (s.llm_first_token, llm_first_token),
        (s.tts_first_byte, tts_first_byte),
    ):
        if value is not None and value >= 0:
            histogram.observe(value)


def user_turn_latency(*, end_of_turn_delay: float | None) -> None:
    if end_of_turn_delay is not None and end_of_turn_delay >= 0:
        series().end_of_turn_delay.observe(end_of_turn_delay)


def provider_error(provider: str | None, kind: str | None) -> None:
    name = (provider or "").strip().lower()
    series().provider_errors.labels(
        provider=name if _PROVIDER.fullmatch(name) else OTHER,
        kind=_bounded(kind, PROVIDER_KINDS),
    ).inc()


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 200 <= status < 600 else "error"


def backend_request(route: str, result: str) -> None:
    """One HTTP attempt: `result` is a status class (`status_class`), `timeout` or `error`."""
    series().backend_requests.labels(
        route=_bounded(route, ROUTES), status_class=_bounded(result, STATUS_CLASSES)
    ).inc()


def delivery(outcome: str) -> None:
    series().deliveries.labels(outcome=_bounded(outcome, DELIVERY_OUTCOMES)).inc()


def recording_upload(outcome: str) -> None:
    series().recordings.labels(outcome=_bounded(outcome, DELIVERY_OUTCOMES)).inc()


def call_resumed(source: str) -> None:
    series().calls_resumed.labels(source=_bounded(source, RESUME_SOURCES)).inc()


def checkpoint(result: str) -> None:
    series().checkpoints.labels(result=_bounded(result, CHECKPOINT_RESULTS)).inc()
