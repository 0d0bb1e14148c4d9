"""OTLP traces: a span per call, with the scenario fetch, the session open, the library's turn
spans (STT, LLM, TTS) and the delivery beneath it.

Rule: our spans go through the tracer livekit-agents instruments (`livekit.agents.telemetry
.tracer`), so one provider serves its spans and ours and they share one trace. Without
OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT that tracer has no provider: its
spans are non-recording and nothing is exported, and the SDK and exporter are not even imported
(`setup_tracing` imports them only when enabled). The provider is set once per process: in the
main process by `__main__`, in each job process by prewarm. Attributes carry ids, counts and
outcomes, never transcript text or prompts; the library's own text attributes are dropped by its
PII filter unless TRACE_INCLUDE_TEXT is set.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, TypeVar

from opentelemetry import trace

from agent.log import get_logger

if TYPE_CHECKING:
    from agent.config import Settings

log = get_logger(__name__)

T = TypeVar("T")
SERVICE_NAME = "voice-agent-worker"


def setup_tracing(settings: Settings) -> bool:
    """Export this process's spans over OTLP (http/protobuf) when configured; True if so.
    Idempotent: a second call in the same process keeps the first provider."""
    if not settings.traces_enabled:
        return False
    from livekit.agents import telemetry

    current = telemetry.tracer._tracer_provider
    if getattr(current, "_voice_agent", False):
        return True
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    # the exporter reads the endpoint, headers and timeout from the standard variables
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(provider, include_text=settings.trace_include_text)
    log.info("tracing.enabled", include_text=settings.trace_include_text)
    return True


def install(provider: trace.TracerProvider, *, include_text: bool = False) -> None:
    """Make `provider` the one the library and we trace with (tests pass an in-memory one)."""
    from livekit.agents import telemetry

    setattr(provider, "_voice_agent", True)  # noqa: B010 - a mark on a foreign object
    telemetry.set_tracer_provider(provider, allow_pii=include_text)


def tracer() -> trace.Tracer:
    # imported here: the journal CLI delivers through agent.delivery without loading livekit
    from livekit.agents import telemetry

    return telemetry.tracer


def start_call_span(job_id: str, scenario_id: str) -> trace.Span:
    """The call's root span: ended by `agent.call.finish` once the transcript is delivered."""
    return tracer().start_span(
        "voice_agent.call",
        attributes={"voice_agent.job_id": job_id, "voice_agent.scenario_id": scenario_id},
    )


@contextlib.asynccontextmanager
async def child_span(name: str, **attributes: str | int | bool) -> AsyncIterator[trace.Span]:
    with tracer().start_as_current_span(name, attributes=attributes) as span:
        yield span


async def in_span(name: str, awaitable: Awaitable[T]) -> T:
    """Await `awaitable` inside a child span of the current one (a gather's branch)."""
    with tracer().start_as_current_span(name):
        return await awaitable
