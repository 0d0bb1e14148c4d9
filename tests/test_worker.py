"""worker.py: metadata rules, server options and the module-level hooks."""

from __future__ import annotations

import json
import pickle

import pytest

from agent import worker
from agent.config import Settings
from agent.worker import MetadataError, build_server, parse_job_metadata

BASE = {
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LIVEKIT_API_KEY": "devkey",
    "LIVEKIT_API_SECRET": "secret_secret_secret_secret_secret_",
    "OPENAI_API_KEY": "sk-test",
}


def settings(**extra: object) -> Settings:
    return Settings.model_validate({**BASE, **extra})


def test_metadata_is_parsed_from_camel_case_and_unknown_keys_ignored() -> None:
    raw = json.dumps({"scenarioId": "s1", "userId": "u1", "sessionId": "x", "extra": 1})
    parsed = parse_job_metadata(raw, settings())
    assert (parsed.scenario_id, parsed.user_id, parsed.session_id) == ("s1", "u1", "x")


def test_empty_metadata_means_the_default_scenario_without_a_backend() -> None:
    parsed = parse_job_metadata("", settings())
    assert parsed.scenario_id == "default" and parsed.user_id == "local"


def test_empty_metadata_is_refused_with_a_backend() -> None:
    with_backend = settings(BACKEND_URL="https://b.example.com", INTERNAL_SERVICE_KEY="k" * 16)
    with pytest.raises(MetadataError):
        parse_job_metadata("  ", with_backend)


def test_invalid_metadata_names_the_field_paths() -> None:
    with pytest.raises(MetadataError) as caught:
        parse_job_metadata(json.dumps({"scenarioId": "", "userId": 5}), settings())
    joined = " ".join(caught.value.fields)
    assert "scenarioId" in joined and "userId" in joined


def test_metadata_that_is_not_json_is_refused() -> None:
    with pytest.raises(MetadataError, match="not JSON"):
        parse_job_metadata("{oops", settings())


def test_overlong_ids_are_refused() -> None:
    with pytest.raises(MetadataError):
        parse_job_metadata(json.dumps({"scenarioId": "s" * 500, "userId": "u"}), settings())


def test_build_server_registers_explicit_dispatch_and_options() -> None:
    server = build_server(settings(AGENT_NAME="roleplay", PORT="9123", MAX_CALL_SECONDS="600"))
    assert server._agent_name == "roleplay"
    assert server._port == 9123
    assert server._drain_timeout == 660
    assert server._session_end_timeout == 40
    assert server._entrypoint_fnc is worker.entrypoint
    assert server._session_end_fnc is worker.on_session_end
    assert server._setup_fnc is worker.prewarm


def test_hooks_pickle_by_reference() -> None:
    for hook in (worker.prewarm, worker.entrypoint, worker.on_session_end):
        assert pickle.loads(pickle.dumps(hook)) is hook
