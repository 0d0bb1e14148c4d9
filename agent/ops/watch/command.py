"""`python -m agent watch`: the command. Its help, its settings, its logging, and the process's
life: the health server, the metrics, the loop, until SIGTERM or SIGINT.

Rule: this process has no LiveKit CLI to render its logs: after `configure_logging` it installs
`agent.log.install_json_lines` (one JSON object a line on stderr, the event name under `event`).
Settings come from `agent.config.load_watch_settings`; a missing or bad one is its name on stderr
and exit 2, before anything starts. `--help` answers without settings. Nothing in the log names a
secret (the API secret goes only to the client).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import TYPE_CHECKING

from agent.log import configure_logging, get_logger, install_json_lines
from agent.ops.watch.loop import WatchLoop, WatchMetrics, serve_health
from agent.ops.watch.policy import Watcher
from agent.ops.watch.server_api import LiveKitServerApi

if TYPE_CHECKING:
    from agent.config import WatchSettings

log = get_logger(__name__)


def main(argv: list[str]) -> int:
    from agent.config import SettingsError, load_watch_settings

    if argv and argv[0] in ("-h", "--help"):
        print(
            "usage: python -m agent watch\n\n"
            "Re-dispatch rooms whose agent vanished (self-hosted LiveKit).\n"
            "Environment: LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET, AGENT_NAME; optional\n"
            "WATCH_INTERVAL_SECONDS (5), WATCH_GRACE_SECONDS (10), WATCH_MAX_REDISPATCH (3),\n"
            "METRICS_PORT, LOG_LEVEL, PORT (GET / there: 503 until LiveKit answered, then 200)."
        )
        return 0
    try:
        settings = load_watch_settings()
    except SettingsError as error:
        print(error.render(), file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    install_json_lines()  # this process has no LiveKit CLI to render logs
    asyncio.run(_serve(settings))
    return 0


async def _serve(settings: WatchSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    metrics = WatchMetrics() if settings.metrics_port is not None else None
    stop_metrics = (
        metrics.serve(settings.metrics_port)
        if metrics and settings.metrics_port is not None
        else None
    )
    server = LiveKitServerApi(
        settings.livekit_url,
        settings.livekit_api_key,
        settings.livekit_api_secret.get_secret_value(),
    )
    watcher = Watcher(
        settings.agent_name,
        grace=settings.watch_grace_seconds,
        max_redispatch=settings.watch_max_redispatch,
    )
    log.info(
        "watch.started",
        agent_name_watched=settings.agent_name,
        interval_seconds=settings.watch_interval_seconds,
        grace_seconds=settings.watch_grace_seconds,
        max_redispatch=settings.watch_max_redispatch,
    )
    watch = WatchLoop(server, watcher, interval=settings.watch_interval_seconds, metrics=metrics)
    health = None
    if settings.port is not None:
        health = await serve_health(settings.port, lambda: watch.reached)
    try:
        await watch.run(stop)
    finally:
        if health is not None:
            await health.cleanup()
        await server.aclose()
        if stop_metrics is not None:
            await asyncio.to_thread(stop_metrics)
        log.info("watch.stopped")
