"""`python -m agent schema`: every wire model in one JSON Schema document (draft 2020-12).

Rule: the document is what actually goes over the wire, so that Ajv in strict mode compiles it
as it is and the backend can generate its Zod schemas from it.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import core_schema

from agent.models.bodies import (
    HeldTranscript,
    JobMetadata,
    Scenario,
    Session,
    SessionCreate,
    TranscriptPayload,
)
from agent.models.data_channel import EndMessage, InterimMessage, TurnMessage
from agent.models.wire import (
    ReceivedModel,
    SentModel,
)

SCHEMA_ID = "urn:voice-agent-worker:wire"


class _WireJsonSchema(GenerateJsonSchema):
    """The schema of what actually goes over the wire, for Ajv (strict, 2020-12) and Zod.

    - No `null`: an optional key is absent on the wire (`exclude_none`), so it is optional and
      never nullable, and a `None` default is not written.
    - What the worker sends (`SentModel`, serialization mode) is closed and every key it always
      sends is required, defaults included (`source`, `usage`, `latency`, `interrupted`, `type`,
      `v`); only keys whose default is absence are optional.
    - What it receives (`ReceivedModel`, validation mode) stays open: it ignores unknown keys.
    - No per-field titles.
    """

    def field_title_should_be_set(self, schema: Any) -> bool:
        # Titles made from wire names ("Endedreason") would become type names in generators
        # such as json-schema-to-typescript; definitions keep their model names.
        return False

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        if json_schema.get("default", ...) is None:
            del json_schema["default"]
        return json_schema

    def field_is_required(
        self,
        field: core_schema.ModelField | core_schema.DataclassField | core_schema.TypedDictField,
        total: bool,
    ) -> bool:
        if self.mode != "serialization":
            return super().field_is_required(field, total)
        inner = field["schema"]
        return inner["type"] != "default" or inner.get("default", ...) is not None

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        json_schema = super().model_schema(schema)
        # A received subclass of a sent model (HeldTurn, a Turn read back) stays open.
        cls = schema["cls"]
        if issubclass(cls, SentModel) and not issubclass(cls, ReceivedModel):
            json_schema["additionalProperties"] = False
        return json_schema


def json_schema_document() -> dict[str, Any]:
    """One JSON Schema document (draft 2020-12, `$id` SCHEMA_ID) with a named definition per
    wire model: sent ones as the worker serialises them, received ones as it accepts them."""
    from pydantic.json_schema import models_json_schema

    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (JobMetadata, "validation"),
        (Scenario, "validation"),
        (SessionCreate, "serialization"),
        (Session, "validation"),
        (TranscriptPayload, "serialization"),
        (HeldTranscript, "validation"),
        (TurnMessage, "serialization"),
        (InterimMessage, "serialization"),
        (EndMessage, "serialization"),
    ]
    _, schema = models_json_schema(
        models,
        by_alias=True,
        title="Voice agent worker wire formats",
        ref_template="#/$defs/{model}",
        schema_generator=_WireJsonSchema,
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "description": (
            "Bodies the worker sends are closed (additionalProperties: false) with every key it "
            "always sends required; bodies it receives (JobMetadata, Scenario, Session, "
            "HeldTranscript) are open "
            "because the worker ignores unknown keys. No value is ever null: optional keys are "
            "absent. Timestamps are ISO-8601 UTC with milliseconds."
        ),
        **schema,
    }
