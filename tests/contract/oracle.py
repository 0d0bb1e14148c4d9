"""The contract oracles, written by hand from DESIGN.md's "Contracts" (never generated from
agent.models): JSON Schemas for the bodies the worker POSTs and golden bodies.

Rule: nothing here imports agent; the backend stub (tests/support/backend_stub.py) validates with
these schemas so a drift between our models and the text cannot hide behind the models
themselves.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, Literal

from jsonschema import Draft202012Validator, FormatChecker, ValidationError

CONTRACT_DIR = Path(__file__).parent
GOLDEN_DIR = CONTRACT_DIR / "golden"
# DESIGN.md "When a call ends": every endedReason, in the order the text lists them.
ENDED_REASONS = [
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

Body = Literal["transcript", "session_create"]
_SCHEMA_FILES: dict[Body, str] = {
    "transcript": "transcript.schema.json",
    "session_create": "session_create.schema.json",
}


def golden(name: str) -> Any:
    """A golden body by file stem, e.g. `golden("transcript_complete")`."""
    return json.loads((GOLDEN_DIR / f"{name}.json").read_text(encoding="utf-8"))


def golden_names(prefix: str) -> list[str]:
    return sorted(path.stem for path in GOLDEN_DIR.glob(f"{prefix}*.json"))


@cache
def validator(body: Body) -> Draft202012Validator:
    """A Draft 2020-12 validator with format checking on (date-time needs rfc3339-validator,
    a dev dependency: without it jsonschema skips the format silently)."""
    schema = json.loads((CONTRACT_DIR / _SCHEMA_FILES[body]).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def _describe(error: ValidationError) -> list[str]:
    # Paths, keys and rules only, never the offending value: it may be transcript text.
    path = [str(p) for p in error.absolute_path]
    required = error.validator_value
    if error.validator == "required" and isinstance(error.instance, dict):
        assert isinstance(required, list)
        missing = [key for key in required if key not in error.instance]
        return [f"{'.'.join([*path, key])}: Field required" for key in missing]
    where = ".".join(path) or "(root)"
    if error.validator == "additionalProperties":
        return [f"{where}: {error.message}"]  # names the unexpected keys
    return [f"{where}: fails {error.validator} {json.dumps(error.validator_value)[:80]}"]


def contract_errors(body: Body, data: Any) -> list[str]:
    """Why `data` breaks the contract, one `path: problem` per problem; [] when it holds."""
    errors = sorted(validator(body).iter_errors(data), key=lambda e: list(e.absolute_path))
    return [line for error in errors for line in _describe(error)]


def strict_json(raw: bytes) -> Any:
    """Parse as a strict JSON parser (JavaScript's JSON.parse) would: bare NaN/Infinity refused."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(raw.decode("utf-8"), parse_constant=refuse)
