"""Reading a recording back with PyAV (never with our code), and telling test tones apart."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from tests.support.fakes import tone_pcm16


def decode_stereo(data: bytes) -> tuple[npt.NDArray[np.float32], int, str]:
    """(samples as [2, n] float32, sample rate, codec name) of an Ogg stream, by PyAV."""
    with av.open(io.BytesIO(data), mode="r", format="ogg") as container:
        stream = container.streams.audio[0]
        codec = stream.codec_context.name
        chunks = []
        rate = stream.rate
        for frame in container.decode(stream):
            assert frame.layout.name == "stereo"
            array = frame.to_ndarray()
            # planar [2, n] or packed [1, 2n]
            chunks.append(array if array.shape[0] == 2 else array.reshape(-1, 2).T)
    samples = np.concatenate(chunks, axis=1).astype(np.float32)
    return samples, rate, codec


def tone_power(channel: npt.NDArray[np.float32], rate: int, hz: float) -> float:
    """Spectral power within 20 Hz of `hz`."""
    spectrum = np.abs(np.fft.rfft(channel)) ** 2
    freqs = np.fft.rfftfreq(len(channel), 1 / rate)
    return float(spectrum[(freqs > hz - 20) & (freqs < hz + 20)].sum())


def write_tone_wav(path: Path, seconds: float, frequency: float) -> Path:
    """A mono 24 kHz WAV of one tone at 0.3 of full scale: a caller that never stops."""
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(24000)
        pcm = tone_pcm16(seconds, sample_rate=24000, frequency=frequency, amplitude=0.3)
        handle.writeframes(pcm.tobytes())
    return path
