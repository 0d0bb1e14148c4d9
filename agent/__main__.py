"""`python -m agent <command>`: validate settings, configure logging, build the server and hand
argv to the LiveKit CLI; plus our own `schema`, `journal`, `playground` and `watch` commands.

Rule: everything happens under `if __name__ == "__main__"` (job processes import this module as
`__mp_main__`), and every fatal start-up problem exits non-zero so a supervisor restarts us: the
LiveKit CLI itself exits 0 when it gives up connecting.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import Settings

EXIT_CONFIG = 2
EXIT_LIVEKIT_UNREACHABLE = 3
EXIT_WORKER_FAILED = 1


def _command(argv: list[str]) -> str | None:
    return next((arg for arg in argv[1:] if not arg.startswith("-")), None)


def main(argv: list[str]) -> int:
    command = _command(argv)
    if command == "schema":
        from agent.models import json_schema_document

        print(json.dumps(json_schema_document(), indent=2))
        return 0
    if command == "journal":
        # The operator's command: needs no LiveKit CLI, no credentials (agent/ops/journal_cli.py)
        from agent.ops.journal_cli import main as journal_main

        return journal_main(argv[argv.index("journal", 1) + 1 :])
    if command == "playground":
        # A developer's page on 127.0.0.1 (agent/ops/playground/); run a worker beside it
        from agent.ops.playground import main as playground_main

        return playground_main(argv[argv.index("playground", 1) + 1 :])
    if command == "watch":
        # self-hosted LiveKit's re-dispatcher, a process of its own (agent/ops/watch.py)
        from agent.ops.watch import main as watch_main

        return watch_main(argv[argv.index("watch", 1) + 1 :])

    from agent.config import RUN_COMMANDS, SettingsError, check_data_dir, load_settings

    wants_help = "--help" in argv or "-h" in argv
    settings = None
    metrics_dir = None
    if command in RUN_COMMANDS and not wants_help:
        try:
            settings = load_settings(command)
            check_data_dir(settings)
        except SettingsError as error:
            print(error.render(), file=sys.stderr)
            return EXIT_CONFIG
        if settings.metrics_port is not None:
            # before livekit.agents (which imports prometheus_client) and before the job
            # processes exist: the mode is fixed at import, and they inherit the variable
            from agent.ops.metrics import use_private_multiproc_dir

            metrics_dir = use_private_multiproc_dir()
    try:
        return _run(argv, settings)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _run(argv: list[str], settings: Settings | None) -> int:
    from livekit.agents import cli

    from agent.log import configure_logging
    from agent.pipeline import skip_unused_model_preload
    from agent.tracing import setup_tracing
    from agent.worker import WorkerServer, build_server, entrypoint, prewarm

    if settings is not None:
        configure_logging(settings.log_level)
        setup_tracing(settings)  # the main process's spans (job processes: prewarm)
        server = build_server(settings)
    else:
        # --help and download-files need no credentials: an unconfigured server serves them
        server = WorkerServer(setup_fnc=prewarm)
        server.rtc_session(entrypoint)

    skip_unused_model_preload(os.environ)
    sys.argv = argv
    code: int | str | None = 0
    try:
        cli.run_app(server)
    except SystemExit as exit_:
        code = exit_.code
    if server.failure is not None:
        print(f"worker failed: {server.failure}", file=sys.stderr)
        if "failed to connect to livekit" in str(server.failure):
            return EXIT_LIVEKIT_UNREACHABLE
        return EXIT_WORKER_FAILED
    if isinstance(code, int):
        return code
    return 0 if code is None else EXIT_WORKER_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv))
