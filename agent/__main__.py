"""`python -m agent <command>`: validate settings, configure logging, build the server and hand
argv to the LiveKit CLI; plus our own `schema`, `journal`, `playground` and `watch` commands.

Rule: everything happens under `if __name__ == "__main__"` (job processes import this module as
`__mp_main__`), and every fatal start-up problem exits non-zero so a supervisor restarts us: the
LiveKit CLI itself exits 0 when it gives up connecting. A problem that would only show once the
worker runs (no journal, no temporary directory for the job processes) stops the boot instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import Settings

EXIT_CONFIG = 2
EXIT_LIVEKIT_UNREACHABLE = 3
EXIT_WORKER_FAILED = 1

# multiprocessing's forkserver listens on <temp dir>/pymp-XXXXXXXX/listener-XXXXXXXX, an AF_UNIX
# socket path (at most 107 bytes on Linux): the longest temporary directory it can use
LONGEST_TEMP_DIR = 107 - len("/pymp-XXXXXXXX/listener-XXXXXXXX")


# Every command, one line each, for `python -m agent --help`: the LiveKit CLI's (its own help,
# `python -m agent COMMAND --help`, has their options; tests/test_main.py checks this list against
# the installed library's) and ours.
LIVEKIT_COMMANDS = {
    "dev": "run the worker against your LiveKit project, reloading on code changes",
    "start": "run the worker in production: JSON logs, drains its calls on SIGTERM",
    "console": "talk to the agent from this terminal (needs PortAudio)",
    "connect": "run the agent in one room right away: connect --room NAME",
    "download-files": "fetch the plugins' model files (nothing to fetch today: an import check)",
}
OUR_COMMANDS = {
    "schema": "print the JSON Schema (draft 2020-12) of every wire format",
    "journal": "the journal of transcripts and recordings: status, list, retry, export",
    "playground": "a page on 127.0.0.1 to call the agent from a browser (beside `dev`)",
    "watch": "re-dispatch rooms whose agent vanished (self-hosted LiveKit), a process of its own",
}
SCHEMA_HELP = """usage: python -m agent schema

Print the JSON Schema (draft 2020-12) of every wire format the worker sends or receives (job
metadata, backend bodies, data-channel messages) as one document with named $defs, for the
backend's Ajv or Zod validators. Needs no settings."""


def usage() -> str:
    width = max(len(name) for name in {**LIVEKIT_COMMANDS, **OUR_COMMANDS})
    lines = ["usage: python -m agent COMMAND [ARGS]...", "", "The worker (the LiveKit CLI):"]
    lines += [f"  {name:<{width}}  {text}" for name, text in LIVEKIT_COMMANDS.items()]
    lines += ["", "Operations:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in OUR_COMMANDS.items()]
    lines += ["", "`python -m agent COMMAND --help` describes each command and its options."]
    return "\n".join(lines)


def _command(argv: list[str]) -> str | None:
    return next((arg for arg in argv[1:] if not arg.startswith("-")), None)


def main(argv: list[str]) -> int:
    command = _command(argv)
    wants_help = "--help" in argv or "-h" in argv
    if command is None and (wants_help or len(argv) == 1):
        print(usage())
        return 0
    if command == "schema":
        if wants_help:
            print(SCHEMA_HELP)
            return 0
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
        # self-hosted LiveKit's re-dispatcher, a process of its own (agent/ops/watch/)
        from agent.ops.watch import main as watch_main

        return watch_main(argv[argv.index("watch", 1) + 1 :])

    from agent.config import RUN_COMMANDS, SettingsError, check_data_dir, load_settings

    settings = None
    metrics_dir = None
    temp_dir = None
    if command in RUN_COMMANDS and not wants_help:
        try:
            settings = load_settings(command)
            check_data_dir(settings)
            # before anything makes a temporary file (the metrics directory, the forkserver)
            temp_dir = use_writable_temp_dir(settings.agent_data_dir)
        except SettingsError as error:
            print(error.render(), file=sys.stderr)
            return EXIT_CONFIG
        if settings.metrics_port is not None:
            # before livekit.agents (which imports prometheus_client) and before the job
            # processes exist: the mode is fixed at import, and they inherit the variable
            from agent.ops.metrics import use_private_multiproc_dir

            metrics_dir = use_private_multiproc_dir()
    try:
        return _run(argv, settings, temp_dir)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def use_writable_temp_dir(data_dir: Path) -> Path | None:
    """No job process starts without a writable temporary directory (multiprocessing's forkserver
    makes its socket there), and a worker without job processes still looks healthy. Under a
    read-only root filesystem tempfile finds none (TMPDIR, /tmp, /var/tmp, /usr/tmp, the working
    directory): then use AGENT_DATA_DIR/tmp, private (0700), in this process and, through TMPDIR,
    in the job processes. Returns that directory, or None when the default one works; raises
    SettingsError when AGENT_DATA_DIR/tmp is not usable either."""
    from agent.config import SettingsError

    try:
        tempfile.gettempdir()  # tries each candidate by writing a file in it
        return None
    except FileNotFoundError as error:
        tried = error.strerror  # "No usable temporary directory found in [...]"
    path = (data_dir / "tmp").absolute()
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        path.chmod(0o700)  # one left by an earlier boot, too
        with tempfile.TemporaryFile(dir=path):
            pass
        problem = None
    except OSError as error:
        problem = f"{type(error).__name__}: {error}"
    if problem is None and len(str(path)) > LONGEST_TEMP_DIR:
        problem = f"longer than the {LONGEST_TEMP_DIR} characters the job processes' socket allows"
    if problem is not None:
        raise SettingsError(
            {
                "TMPDIR": f"no writable temporary directory, and job processes cannot start "
                f"without one ({tried}; AGENT_DATA_DIR/tmp, {path}: {problem}). Make one "
                "writable: TMPDIR set to a writable directory, a tmpfs at /tmp (Kubernetes: an "
                "emptyDir at /tmp), or AGENT_DATA_DIR on a writable volume, where the worker "
                "then uses AGENT_DATA_DIR/tmp (docs/deploy.md, read-only root filesystem)"
            }
        )
    os.environ["TMPDIR"] = str(path)  # inherited by the forkserver and the job processes
    tempfile.tempdir = str(path)
    return path


def _run(argv: list[str], settings: Settings | None, temp_dir: Path | None = None) -> int:
    from livekit.agents import cli

    from agent.log import configure_logging
    from agent.pipeline import skip_unused_model_preload
    from agent.server import WorkerServer
    from agent.tracing import setup_tracing
    from agent.worker import build_server, entrypoint, prewarm

    if settings is not None:
        configure_logging(settings.log_level)
        setup_tracing(settings)  # the main process's spans (job processes: prewarm)
        server = build_server(settings)
        server.temp_dir = None if temp_dir is None else str(temp_dir)  # logged by its run()
    else:
        # --help and download-files need no credentials: an unconfigured server serves them
        server = WorkerServer(setup_fnc=prewarm)
        server.rtc_session(entrypoint)

    if settings is not None:
        skip_unused_model_preload(os.environ)
        os.environ.update(settings.library_environment)  # before the processes that read it
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


def _stop_booting(_signum: int, _frame: object) -> None:
    # Until the LiveKit CLI installs its own handler, a SIGTERM means "never mind": nothing
    # runs yet. In the image python is PID 1, and the kernel drops a signal PID 1 has no
    # handler for, so without this one a deployment stopped during its first seconds would
    # boot, take calls, and be killed drainingSeconds later.
    sys.exit(0)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop_booting)
    sys.exit(main(sys.argv))
