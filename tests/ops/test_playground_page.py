"""The playground page plays the delivered recording back after the call (issue 24), in Debian's
Chromium driven by the pinned playwright-core of tests/e2e/browser/ (skipped without them): the
page gets `end`, asks the server for the session's recording until the upload arrives (it comes
after the transcript), and shows an <audio> element that the browser loads through the guard.
No LiveKit: the page's `end` packet is handed to its own handler."""

from __future__ import annotations

import asyncio
import io
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import av
import numpy as np
import pytest
from aiohttp import web

from agent.backend.local import LocalBackend
from agent.models import SessionCreate
from agent.ops.playground.server import serve
from tests.support.browser import BROWSER_DIR, CHROMIUM, browser_unavailable
from tests.support.settings import make_settings

SECONDS: Final = 1.0  # the recording's length
DRIVER_TIMEOUT: Final = 60.0

# Reads PAGE_URL, SESSION_ID, RECORD (1/0) and WAIT_FOR ("audio" or "status") from the
# environment; prints "waiting" once the page waits for the recording, then one JSON line.
DRIVER: Final = """
import { chromium } from "playwright-core";
const { PAGE_URL, SESSION_ID, RECORD, WAIT_FOR, CHROMIUM } = process.env;
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const result = { requests: [], console: [] };
try {
  const page = await browser.newPage();
  page.on("console", (m) => result.console.push(`${m.type()}: ${m.text()}`.slice(0, 300)));
  page.on("pageerror", (e) => result.console.push(`pageerror: ${e.message}`.slice(0, 300)));
  page.on("request", (r) => {
    if (r.url().includes("/api/recording/")) result.requests.push(new URL(r.url()).pathname);
  });
  await page.goto(PAGE_URL);
  await page.evaluate(([sessionId, record]) => {
    window.playground.record = record;
    onTranscriptPacket({ v: 1, type: "end", sessionId, turnCount: 0 });
  }, [SESSION_ID, RECORD === "1"]);
  if (WAIT_FOR === "audio") {
    await page.waitForFunction(
      () => document.getElementById("recording-status").textContent.startsWith("waiting"),
      null, { timeout: 5000 });
    console.log("waiting");
    await page.waitForFunction(() => {
      const audio = document.querySelector("#recording audio");
      return audio !== null && audio.readyState >= 1 && Number.isFinite(audio.duration);
    }, null, { timeout: 20000 });
  } else {
    await page.waitForFunction(
      () => document.getElementById("recording-status").textContent.startsWith("not recorded"),
      null, { timeout: 5000 });
  }
  Object.assign(result, await page.evaluate(() => {
    const audios = [...document.querySelectorAll("#recording audio")];
    return {
      status: document.getElementById("recording-status").textContent,
      audio: audios.map((a) => ({ src: new URL(a.src).pathname, duration: a.duration,
                                  controls: a.controls })),
      recording: window.playground.recording,
    };
  }));
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
"""


pytestmark = pytest.mark.skipif(
    browser_unavailable() is not None, reason=str(browser_unavailable())
)


def ogg_opus(seconds: float) -> bytes:
    """A stereo Ogg/Opus file as the worker records (caller left, agent right): two tones."""
    rate = 48_000
    t = np.arange(int(seconds * rate)) / rate
    left, right = (np.sin(2 * np.pi * f * t) * 8000 for f in (440, 660))
    pcm = np.stack([left, right], axis=1).astype(np.int16).reshape(1, -1)
    out = io.BytesIO()
    with av.open(out, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()


@pytest.fixture
async def page_url(tmp_path: Path) -> AsyncIterator[str]:
    runner: web.AppRunner = await serve(make_settings(AGENT_DATA_DIR=str(tmp_path)), 0)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def drive(
    url: str,
    session_id: str,
    *,
    record: bool,
    wait_for: str,
    when_waiting: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Run the driver; `when_waiting` runs once the page waits for the recording. Returns the
    driver's result (one JSON line)."""
    env = {
        **os.environ,
        "PAGE_URL": url,
        "SESSION_ID": session_id,
        "RECORD": "1" if record else "0",
        "WAIT_FOR": wait_for,
        "CHROMIUM": CHROMIUM,
    }
    process = await asyncio.create_subprocess_exec(
        "node",
        "--input-type=module",
        "-e",
        DRIVER,
        cwd=BROWSER_DIR,  # where playwright-core resolves from
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    async def run() -> dict[str, Any]:
        assert process.stdout is not None and process.stderr is not None
        lines: list[str] = []
        async for raw in process.stdout:
            line = raw.decode().strip()
            if line == "waiting" and when_waiting is not None:
                await when_waiting()
            lines.append(line)
        await process.wait()
        stderr = (await process.stderr.read()).decode()
        assert lines, f"the driver said nothing (exit {process.returncode}): {stderr[-2000:]}"
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    try:
        return await asyncio.wait_for(run(), DRIVER_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_page_plays_the_recording_delivered_after_the_call(
    page_url: str, tmp_path: Path
) -> None:
    """The upload lands only once the page is already waiting (as it does, after the
    transcript): the page keeps asking, then the browser loads the Ogg/Opus file through the
    guard and knows its length."""
    backend = LocalBackend(tmp_path)
    body = {"scenarioId": "default", "userId": "playground", "roomName": "playground-page"}
    session = await backend.create_session(
        SessionCreate.model_validate(body), room_sid=f"RM_{uuid.uuid4().hex[:12]}"
    )
    recording = ogg_opus(SECONDS)

    async def upload() -> None:
        await asyncio.sleep(1.5)  # a poll or two find nothing first
        await backend.put_recording(session.id, session.attempt_number, 1, recording, deadline=5)

    result = await drive(page_url, session.id, record=True, wait_for="audio", when_waiting=upload)
    assert "error" not in result, result
    part = f"/api/recording/{session.id}/1"
    [audio] = result["audio"]
    assert audio["src"] == part and audio["controls"]
    assert abs(audio["duration"] - SECONDS) < 0.1, audio
    assert result["recording"] == {
        "where": "local",
        "parts": [{"url": part, "bytes": len(recording)}],
    }
    assert result["status"].startswith("delivered (local): 1 part")
    asked = [path for path in result["requests"] if path == f"/api/recording/{session.id}"]
    assert len(asked) >= 2, "the page asked again until the upload arrived"
    assert part in result["requests"], "the browser loaded the part"


async def test_the_page_says_not_recorded_at_once_when_the_box_was_off(page_url: str) -> None:
    result = await drive(page_url, "local-unrecorded", record=False, wait_for="status")
    assert "error" not in result, result
    assert result["status"].startswith("not recorded")
    assert result["audio"] == [] and result["recording"] is None
    assert result["requests"] == ["/api/recording/local-unrecorded"], "asked once, not polled"
