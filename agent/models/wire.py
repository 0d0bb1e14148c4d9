"""The wire's building blocks: field types, time helpers and the base models.

Rule: camelCase on the wire (snake_case in Python), every multi-word wire name written out
(`Field(alias=...)`, never computed: a generator once turned `e2e_ms` into `e2EMs`), timestamps
ISO-8601 UTC with milliseconds (a received time must carry its offset), no value ever `null`
(optional keys are absent). Sanitising happens here, at the boundary, so one odd character or
number never costs a call its transcript: lone surrogates become U+FFFD, non-finite or negative
usage and latency figures are dropped, and the encoder refuses NaN (`allow_nan=False`) as a
last guard.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    field_validator,
)

EndedReason = Literal[
    "caller_left",
    "caller_hangup",
    "room_closed",
    "max_duration",
    "no_show",
    "agent_error",
    "job_terminated",
    "worker_shutdown",
    "backend_unavailable",
    "crashed",
    "in_progress",
]
# The only reasons a transcript is incomplete: a call recovered from a dead process, and a
# checkpoint of a live call. Every other reason ends a call whose turns are all there.
INCOMPLETE_REASONS: frozenset[str] = frozenset({"crashed", "in_progress"})
Role = Literal["user", "assistant"]

ID_MAX = 128
TEXT_MAX = 100_000  # a turn: far above what MAX_CALL_SECONDS of speech can produce
LABEL_MAX = 256  # provider and model names, room names, item ids
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> str:
    """`value` with every lone surrogate replaced by U+FFFD (a pair split into two code points is
    joined into its character), so it always encodes as UTF-8."""
    if _SURROGATE.search(value) is None:
        return value
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _label(value: Any) -> Any:
    # A provider or model name is a label, not evidence: an empty one becomes "unknown" and a
    # long one is cut, rather than refusing the transcript that carries it.
    if not isinstance(value, str):
        return value
    value = value.strip()
    return value[:LABEL_MAX] if value else "unknown"


def _empty_is_absent(value: Any) -> Any:
    # The worker treats an empty optional text as absent (`scenario.greeting or default`).
    return None if value == "" else value


def _figure(value: Any) -> Any:
    # A usage figure that is NaN, infinite or negative is no measurement: dropped (absent).
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if is_number and (not math.isfinite(value) or value < 0):
        return None
    return value


Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=ID_MAX)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=TEXT_MAX)]
Label = Annotated[
    str, BeforeValidator(_label), StringConstraints(min_length=1, max_length=LABEL_MAX)
]
# The bounds sit on the number itself, not on the optional: a bound on `X | None` would be
# exported as an unknown keyword (`ge`), which Ajv's strict mode refuses.
Count = Annotated[Annotated[int, Field(ge=0)] | None, BeforeValidator(_figure)]
Seconds = Annotated[
    Annotated[float, Field(ge=0, allow_inf_nan=False)] | None, BeforeValidator(_figure)
]
Millis = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _iso_ms(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Timezone-aware only: a time without an offset is a validation error naming its field. Read as
# local time, or compared with an aware one, it would shift a transcript or break the journal
# rows it lands in (one garbled held transcript once stopped every recovery pass).
UtcDatetime = Annotated[
    AwareDatetime,
    PlainSerializer(_iso_ms, return_type=str, when_used="json"),
    Field(json_schema_extra={"format": "date-time", "pattern": TIMESTAMP_PATTERN}),
]


def utc_from_timestamp(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def utc_now() -> datetime:
    return datetime.now(tz=UTC)


def _one_word(name: str) -> str:
    """The alias generator: a one-word field is its own wire name; a multi-word field must
    write its wire name out (`Field(alias="e2eMs")`), checked when the class is defined."""
    if "_" in name:
        raise TypeError(f"wire field {name!r} needs an explicit name: Field(alias=...)")
    return name


class WireModel(BaseModel):
    """camelCase on the wire; unknown keys ignored when reading (the other side may add fields,
    and journaled payloads stay readable); every text sanitised (`clean_text`)."""

    model_config = ConfigDict(
        alias_generator=_one_word, populate_by_name=True, extra="ignore", frozen=True
    )

    @field_validator("*", mode="before")
    @classmethod
    def _clean_texts(cls, value: Any) -> Any:
        return clean_text(value) if isinstance(value, str) else value

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json_bytes(self) -> bytes:
        # allow_nan=False: bare NaN is not JSON; validation drops such numbers, this is the
        # last guard (a model_construct or model_copy skips validation).
        return json.dumps(
            self.to_wire(), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()


class SentModel(WireModel):
    """What the worker sends: closed in the exported schema (`additionalProperties: false`),
    every key it always sends `required`."""


class ReceivedModel(WireModel):
    """What the worker receives: open in the exported schema, since the worker ignores keys it
    does not know (the backend may add fields without breaking running workers)."""
