"""worker.py: server options and the module-level hooks."""

from __future__ import annotations

import pickle

from agent import worker
from agent.worker import build_server
from tests.support.settings import make_settings


def test_build_server_registers_explicit_dispatch_and_options() -> None:
    server = build_server(make_settings(AGENT_NAME="roleplay", PORT="9123", MAX_CALL_SECONDS="600"))
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


def test_the_unused_end_of_turn_model_is_not_preloaded_unless_asked() -> None:
    from agent.pipeline import PRELOAD_ENV, skip_unused_model_preload

    environ: dict[str, str] = {}
    skip_unused_model_preload(environ, make_settings(TURN_DETECTION="vad"))
    assert environ == {PRELOAD_ENV: "0"}
    operator = {PRELOAD_ENV: "1"}
    skip_unused_model_preload(operator, make_settings(TURN_DETECTION="vad"))
    assert operator == {PRELOAD_ENV: "1"}


def test_the_end_of_turn_model_in_use_is_preloaded_once_for_every_job_process() -> None:
    from agent.pipeline import skip_unused_model_preload

    environ: dict[str, str] = {}
    skip_unused_model_preload(environ, make_settings(TURN_DETECTION="model"))
    assert environ == {}  # the library's default: loaded in the forkserver, shared
