"""`python -m agent <command>`: validate settings, configure logging, build the server and hand
argv to the LiveKit CLI; plus our own `schema` and `journal` commands.

Rule: everything happens under `if __name__ == "__main__"` (job processes import this module as
`__mp_main__`), and every fatal start-up problem exits non-zero so a supervisor restarts us: the
LiveKit CLI itself exits 0 when it gives up connecting.
"""

from __future__ import annotations

import json
import os
import sys

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

    from livekit.agents import cli

    from agent.config import RUN_COMMANDS, SettingsError, check_data_dir, load_settings
    from agent.log import configure_logging
    from agent.pipeline import skip_unused_model_preload
    from agent.worker import WorkerServer, build_server, entrypoint, prewarm

    wants_help = "--help" in argv or "-h" in argv
    if command in RUN_COMMANDS and not wants_help:
        try:
            settings = load_settings(command)
            check_data_dir(settings)
        except SettingsError as error:
            print(error.render(), file=sys.stderr)
            return EXIT_CONFIG
        configure_logging(settings.log_level)
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
