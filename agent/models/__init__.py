"""Every wire format of the worker: job metadata, backend bodies, data-channel messages.

Rule: these pydantic models are the single source of truth for anything that crosses a process
boundary. camelCase on the wire (snake_case in Python), every multi-word wire name written out
(`Field(alias=...)`, never computed: a generator once turned `e2e_ms` into `e2EMs`), timestamps
ISO-8601 UTC with milliseconds, no value ever `null` (optional keys are absent), and
`python -m agent schema` prints them all as one JSON Schema document (draft 2020-12) that Ajv in
strict mode compiles as it is.

Sanitising happens here, at the boundary, so one odd character or number never costs a call its
transcript: lone surrogates become U+FFFD, non-finite or negative usage and latency figures are
dropped, and the encoder refuses NaN (`allow_nan=False`) as a last guard.
"""

from agent.models.bodies import (
    HeldTranscript,
    HeldTurn,
    HeldUsage,
    JobMetadata,
    Latency,
    Percentiles,
    Scenario,
    Session,
    SessionCreate,
    TranscriptPayload,
    Turn,
    Usage,
)
from agent.models.data_channel import (
    MAX_PACKET_BYTES,
    TRANSCRIPT_TOPIC,
    EndMessage,
    InterimMessage,
    TurnMessage,
)
from agent.models.schema import SCHEMA_ID, json_schema_document
from agent.models.wire import (
    ID_MAX,
    INCOMPLETE_REASONS,
    LABEL_MAX,
    TEXT_MAX,
    TIMESTAMP_PATTERN,
    EndedReason,
    ReceivedModel,
    Role,
    SentModel,
    WireModel,
    clean_text,
    utc_from_timestamp,
    utc_now,
)

__all__ = [
    "ID_MAX",
    "INCOMPLETE_REASONS",
    "LABEL_MAX",
    "MAX_PACKET_BYTES",
    "SCHEMA_ID",
    "TEXT_MAX",
    "TIMESTAMP_PATTERN",
    "TRANSCRIPT_TOPIC",
    "EndMessage",
    "EndedReason",
    "HeldTranscript",
    "HeldTurn",
    "HeldUsage",
    "InterimMessage",
    "JobMetadata",
    "Latency",
    "Percentiles",
    "ReceivedModel",
    "Role",
    "Scenario",
    "SentModel",
    "Session",
    "SessionCreate",
    "TranscriptPayload",
    "Turn",
    "TurnMessage",
    "Usage",
    "WireModel",
    "clean_text",
    "json_schema_document",
    "utc_from_timestamp",
    "utc_now",
]
