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


def test_the_forkserver_never_preloads_the_end_of_turn_weights_unless_asked() -> None:
    # no job process uses them: the model runs in the inference process (agent.end_of_turn)
    from agent.pipeline import PRELOAD_ENV, skip_unused_model_preload

    environ: dict[str, str] = {}
    skip_unused_model_preload(environ)
    assert environ == {PRELOAD_ENV: "0"}
    operator = {PRELOAD_ENV: "1"}
    skip_unused_model_preload(operator)
    assert operator == {PRELOAD_ENV: "1"}


def test_the_model_setting_registers_the_end_of_turn_runner_and_vad_does_not() -> None:
    from livekit.agents.inference_runner import _InferenceRunner

    from agent.end_of_turn import METHOD

    registered = _InferenceRunner.registered_runners
    saved = dict(registered)
    try:
        registered.pop(METHOD, None)
        worker.build_server(make_settings(TURN_DETECTION="vad"))
        assert METHOD not in registered
        worker.build_server(make_settings(TURN_DETECTION="model"))
        assert METHOD in registered
        worker.build_server(make_settings(TURN_DETECTION="model"))  # idempotent
    finally:
        registered.clear()
        registered.update(saved)


def test_every_module_preloaded_in_the_forkserver_imports() -> None:
    # the forkserver skips a preload module that fails to import, silently: a module renamed by
    # an upgrade would quietly go back to being imported inside each call's first turns
    import subprocess
    import sys

    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    completed = subprocess.run(
        [sys.executable, "-c", code, *worker.FORKSERVER_PRELOAD],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]


def test_the_server_preloads_our_modules_in_the_forkserver() -> None:
    server = worker.build_server(make_settings())
    assert server._preload_modules == list(worker.FORKSERVER_PRELOAD)
    assert "agent.worker" in worker.FORKSERVER_PRELOAD
