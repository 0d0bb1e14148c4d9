"""The two HTTP test doubles of the e2e layer as processes in the namespace, and their control APIs.

* ``start_openai_stub(processes)``: ``python -m tests.support.openai_stub`` on a free loopback
  port; ``base_url`` is what the worker gets as OPENAI_BASE_URL; faults and configuration go
  through its ``/_control`` endpoints (``fail_chat``, ``stall_chat``, ``config``, ``requests``,
  ``realtime_events``); ``profile`` picks its timing profile (``--profile``: ``typical``...).
* ``start_backend_stub(processes, key)``: ``python -m tests.support.backend_stub`` with the API
  and a separate control listener (which stays up while the API is ``down``); ``url`` is what the
  worker gets as BACKEND_URL.

Both run as separate processes (their own process groups, killed by the ``processes`` fixture
before the stand-in stops) so their work never competes with the stand-in's and the caller's
media on the test's event loop. Every control call is bounded in time.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Final

import httpx

from tests.e2e.harness import ManagedProcess, ProcessGroup

READY_TIMEOUT: Final = 30.0
CONTROL_TIMEOUT: Final = 5.0
OPENAI_READY: Final = re.compile(r"OPENAI_STUB_READY (\S+)\n")
BACKEND_READY: Final = re.compile(r'^(\{"url".*\})\n', re.MULTILINE)


def _client() -> httpx.AsyncClient:
    # trust_env=False: no proxy from the environment for loopback control calls
    return httpx.AsyncClient(timeout=CONTROL_TIMEOUT, trust_env=False)


async def _request(method: str, url: str, body: Any = None) -> Any:
    async with _client() as client:
        response = await client.request(method, url, json=body)
    response.raise_for_status()
    return response.json()


async def _ready_line(proc: ManagedProcess, pattern: re.Pattern[str]) -> re.Match[str]:
    """Wait (bounded) for the stub's ready line in its log; fail with the log's tail."""
    deadline = time.monotonic() + READY_TIMEOUT
    while (match := pattern.search(proc.log_text())) is None:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.returncode}):\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name} not ready in {READY_TIMEOUT}s:\n{proc.log_tail()}")
        await asyncio.sleep(0.05)
    return match


@dataclass
class OpenAIStubProcess:
    proc: ManagedProcess
    base_url: str  # http://127.0.0.1:N/v1: the worker's OPENAI_BASE_URL

    @property
    def control_url(self) -> str:
        return self.base_url.removesuffix("/v1") + "/_control"

    async def control(self, action: str, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = await _request("POST", f"{self.control_url}/{action}", body)
        return result

    async def configure(self, **options: Any) -> None:
        """``transcript``, ``reply``, ``reply_mode`` (``"context"``: a reply that names every
        earlier user turn of the request), ``tts_max_seconds``, ``chat_token_delay``, ..."""
        await self.control("config", **options)

    async def fail_chat(self, count: int, status: int = 500) -> None:
        await self.control("fail_chat", count=count, status=status)

    async def stall_chat(self, count: int, seconds: float) -> None:
        await self.control("stall_chat", count=count, seconds=seconds)

    async def requests(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        query = f"?endpoint={endpoint}" if endpoint else ""
        result: list[dict[str, Any]] = await _request("GET", f"{self.control_url}/requests{query}")
        return result

    async def realtime_events(
        self, *, direction: str | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        """The realtime transcription events, ``{"at": time.time(), "dir": "in"|"out",
        "event"}``, of one direction and from ``since`` (a ``time.time()``) on when given."""
        params = [f"dir={direction}"] if direction else []
        params += [f"since={since!r}"] if since is not None else []
        query = f"?{'&'.join(params)}" if params else ""
        result: list[dict[str, Any]] = await _request(
            "GET", f"{self.control_url}/realtime_events{query}"
        )
        return result

    async def clear_realtime_events(self) -> None:
        await _request("DELETE", f"{self.control_url}/realtime_events")


@dataclass
class BackendStubProcess:
    proc: ManagedProcess
    url: str  # http://127.0.0.1:N: the worker's BACKEND_URL
    control_url: str  # on its own port: reachable while the API is down
    key: str

    async def down(self) -> None:
        await _request("POST", f"{self.control_url}/down")

    async def up(self) -> None:
        await _request("POST", f"{self.control_url}/up")

    async def add_session(
        self, session_id: str, *, user_id: str, scenario_id: str, attempt_number: int = 1
    ) -> dict[str, Any]:
        body = {
            "id": session_id,
            "userId": user_id,
            "scenarioId": scenario_id,
            "attemptNumber": attempt_number,
        }
        result: dict[str, Any] = await _request("POST", f"{self.control_url}/sessions", body)
        return result

    async def sessions(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await _request("GET", f"{self.control_url}/sessions")
        return result

    async def transcripts(self, session_id: str) -> list[dict[str, Any]]:
        """The accepted transcripts of one session, in acceptance order (``source``,
        ``idempotencyKey``, ``transcript``)."""
        result: list[dict[str, Any]] = await _request(
            "GET", f"{self.control_url}/transcripts/{session_id}"
        )
        return result

    async def requests(self, route: str | None = None) -> list[dict[str, Any]]:
        """Recorded requests (the key replaced by ``keyOk``), optionally of one route."""
        result: list[dict[str, Any]] = await _request("GET", f"{self.control_url}/requests")
        return [r for r in result if route is None or r["route"] == route]

    async def recordings(self) -> dict[str, list[dict[str, Any]]]:
        """The recordings held, ``{sessionId: [{"attemptNumber", "part", "idempotencyKey",
        "size", "sha256"}...]}``."""
        result: dict[str, list[dict[str, Any]]] = await _request(
            "GET", f"{self.control_url}/recordings"
        )
        return result

    async def recording(self, session_id: str, attempt_number: int, part: int) -> bytes:
        """The bytes of one recording held (HTTP 404 raises when none is)."""
        async with _client() as client:
            response = await client.get(
                f"{self.control_url}/recordings/{session_id}/{attempt_number}/{part}"
            )
        response.raise_for_status()
        return response.content


async def start_openai_stub(
    processes: ProcessGroup,
    *,
    transcript: str,
    tts_max_seconds: float = 1.5,
    reply_mode: str = "echo",
    profile: str | None = None,
) -> OpenAIStubProcess:
    """``profile``: the stub's timing profile (``zero``, ``typical``, ``slow``); None keeps
    its default, ``zero`` (the process gets a small environment, not OPENAI_STUB_PROFILE)."""
    args = [
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--transcript",
        transcript,
        "--tts-max-seconds",
        str(tts_max_seconds),
        "--reply-mode",
        reply_mode,
        "--verbose",  # one line per request in its log
    ]
    if profile is not None:
        args += ["--profile", profile]
    proc = processes.start_module("tests.support.openai_stub", {}, *args, name="openai_stub")
    match = await _ready_line(proc, OPENAI_READY)
    return OpenAIStubProcess(proc=proc, base_url=match.group(1))


async def start_backend_stub(processes: ProcessGroup, *, key: str) -> BackendStubProcess:
    proc = processes.start_module(
        "tests.support.backend_stub",
        {"BACKEND_STUB_KEY": key},  # not on the command line (ps shows argv)
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--control-port",
        "0",
        name="backend_stub",
    )
    match = await _ready_line(proc, BACKEND_READY)
    ready = json.loads(match.group(1))
    return BackendStubProcess(
        proc=proc,
        url=str(ready["url"]),
        control_url=f"http://127.0.0.1:{ready['controlPort']}/_control",
        key=key,
    )
