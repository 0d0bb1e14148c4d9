"""`python -m agent playground [--port N]`: talk to the agent in a browser, on 127.0.0.1 only.

Rule: the same .env as `dev` (LIVEKIT_*, AGENT_NAME, BACKEND_URL or the embedded default); run a
worker (`python -m agent dev`) beside it. The command serves the page until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from agent.ops.playground.guard import HOST
from agent.ops.playground.server import serve

__all__ = ["main"]


def main(argv: list[str]) -> int:
    from agent.config import SettingsError, load_settings
    from agent.log import configure_logging

    parser = argparse.ArgumentParser(
        prog="python -m agent playground",
        description="A local page (127.0.0.1 only) to call the agent from a browser.",
    )
    parser.add_argument("--port", type=int, default=None, help="default: PLAYGROUND_PORT")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(error.render(), file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    port = settings.playground_port if args.port is None else args.port
    if not 0 <= port <= 65535:
        print(f"--port {port}: not a TCP port", file=sys.stderr)
        return 2

    async def run() -> None:
        runner = await serve(settings, port)
        bound = runner.addresses[0][1]
        print(f"playground on http://{HOST}:{bound}/ (Ctrl-C to stop)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it stops
        asyncio.run(run())
    return 0
