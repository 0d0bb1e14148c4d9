"""What only the voice-latency benchmark needs: a capturing sink that timestamps audible frames.
The rest (the looping real-time WAV microphone and its voiced end, settings, quiet logging, the
JSON output) is in bench/_common.py.
"""

from __future__ import annotations

import time

import numpy as np
from livekit import rtc

from tests.support.fakes import CaptureAudioOutput

AUDIBLE_RMS = 100.0
"""A frame is audible above this RMS (s16 units, about -50 dBFS)."""


class AudibleOutput(CaptureAudioOutput):
    """The capturing sink (simulated real-time playout), plus the time of every audible frame."""

    def __init__(self) -> None:
        super().__init__()
        self.audible_at: list[float] = []

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        samples = np.frombuffer(frame.data, dtype=np.int16).astype(np.float64)
        if samples.size and float(np.sqrt(np.mean(samples * samples))) > AUDIBLE_RMS:
            self.audible_at.append(time.time())
