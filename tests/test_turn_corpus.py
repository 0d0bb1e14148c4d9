"""The committed turn-taking corpus (tests/audio/turns/, made by bench/make_turn_corpus.py; issue
21, DESIGN.md "Taking turns"): the manifest and the WAVs agree, and every utterance is what its kind
promises. Reads the files with the stdlib only: piper is never needed here."""

from __future__ import annotations

import array
import itertools
import json
import math
import sys
import wave
from functools import cache
from pathlib import Path
from typing import Any

import pytest

TURNS = Path(__file__).resolve().parent / "audio" / "turns"
MANIFEST = TURNS / "manifest.json"
RATE = 16_000

MIN_COUNTS = {
    "statement": 8,
    "question": 6,
    "pause": 14,
    "continuation": 6,
    "backchannel": 8,
    "bargein": 8,
}
PAUSE_SECONDS_COVERED = (0.6, 0.8, 1.0, 1.2, 1.5, 2.0)
LEAD_S = 0.3
TAIL_S = 1.0
SILENT_RMS = 3.0
"""s16 units (about -80 dBFS): the generator writes digital silence."""
SPEECH_RMS = 300.0
"""s16 units (about -40 dBFS); the generator's speech peaks at 0.8 full scale."""
TIME_TOLERANCE = 0.0015
"""Times in the manifest are rounded to milliseconds."""


def load_manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return data


def utterances() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = load_manifest()["utterances"]
    return items


@cache
def read_wav(name: str) -> tuple[int, int, int, array.array[int]]:
    """(rate, channels, sample width, samples) of a WAV in the corpus."""
    with wave.open(str(TURNS / name), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        frames = w.readframes(w.getnframes())
    samples = array.array("h")
    if width == 2:
        samples.frombytes(frames)
        if sys.byteorder == "big":
            samples.byteswap()
    return rate, channels, width, samples


def rms(samples: array.array[int], start_s: float, end_s: float) -> float:
    part = samples[round(start_s * RATE) : round(end_s * RATE)]
    if not part:
        return 0.0
    return math.sqrt(sum(s * s for s in part) / len(part))


def test_manifest_shape() -> None:
    manifest = load_manifest()
    assert list(manifest) == ["sample_rate", "voice", "generator", "piper", "utterances"]
    assert manifest["sample_rate"] == RATE
    assert manifest["voice"] == "en_US-joe-medium"
    assert manifest["generator"] == "bench/make_turn_corpus.py"
    assert (Path(__file__).resolve().parents[1] / manifest["generator"]).is_file()
    assert set(manifest["piper"]) == {"version", "length_scale", "noise_scale", "noise_w"}
    ids = [u["id"] for u in manifest["utterances"]]
    assert len(ids) == len(set(ids)), "ids are unique"
    assert ids == sorted(ids), "sorted by id"
    for u in manifest["utterances"]:
        assert set(u) == {
            "id",
            "file",
            "kind",
            "text",
            "duration",
            "speech",
            "pause",
            "end_of_speech",
        }
        assert u["file"] == f"{u['id']}.wav"
        assert u["kind"] in MIN_COUNTS
        assert u["text"].strip()


def test_counts_per_kind() -> None:
    counts = {kind: 0 for kind in MIN_COUNTS}
    for u in utterances():
        counts[u["kind"]] += 1
    for kind, minimum in MIN_COUNTS.items():
        assert counts[kind] >= minimum, f"{kind}: {counts[kind]} < {minimum}"
    assert sum(counts.values()) >= 44


def test_pause_lengths_covered() -> None:
    seconds = [u["pause"]["seconds"] for u in utterances() if u["kind"] == "pause"]
    for wanted in PAUSE_SECONDS_COVERED:
        assert wanted in seconds, f"no pause of {wanted} s"
    assert seconds.count(1.2) >= 2 and seconds.count(1.5) >= 2


def test_every_wav_is_in_the_manifest() -> None:
    listed = {u["file"] for u in utterances()}
    on_disk = {p.name for p in TURNS.glob("*.wav")}
    assert on_disk == listed


def test_corpus_is_small() -> None:
    total = sum(p.stat().st_size for p in TURNS.glob("*.wav"))
    assert total < 10_000_000


@pytest.mark.parametrize("u", utterances(), ids=lambda u: str(u["id"]))
def test_utterance(u: dict[str, Any]) -> None:
    rate, channels, width, samples = read_wav(u["file"])
    assert (rate, channels, width) == (RATE, 1, 2), "16 kHz mono 16-bit"
    duration = len(samples) / RATE
    assert abs(duration - u["duration"]) <= 0.010

    speech: list[list[float]] = u["speech"]
    pause: dict[str, Any] | None = u["pause"]
    assert speech, "at least one speech segment"
    for start, end in speech:
        assert start < end
    for (_, end), (start, _) in itertools.pairwise(speech):
        assert end < start, "segments are in order and apart"
    assert u["end_of_speech"] == speech[-1][1]

    # The lead and the tail are silent, and the speech starts and ends where they do.
    assert abs(speech[0][0] - LEAD_S) <= TIME_TOLERANCE
    assert abs(duration - u["end_of_speech"] - TAIL_S) <= TIME_TOLERANCE
    assert rms(samples, 0.0, LEAD_S) <= SILENT_RMS
    assert rms(samples, duration - TAIL_S, duration) <= SILENT_RMS

    for start, end in speech:
        assert rms(samples, start, end) >= SPEECH_RMS, f"speech at {start}-{end} s"

    if u["kind"] in ("pause", "continuation"):
        assert pause is not None
        assert len(speech) == 2, "the pause lies between two speech segments"
        assert 0.6 <= pause["seconds"] <= 2.0
        assert abs(pause["start"] - speech[0][1]) <= TIME_TOLERANCE
        assert abs(pause["end"] - speech[1][0]) <= TIME_TOLERANCE
        assert abs(pause["end"] - pause["start"] - pause["seconds"]) <= TIME_TOLERANCE
        assert rms(samples, pause["start"], pause["end"]) <= SILENT_RMS, "the pause is silent"
        assert " ... " in u["text"]
        before = u["text"].split(" ... ")[0]
        assert before.lower().endswith(pause["after"].lower()), "the pause follows `after`"
        # a thinking pause follows an open clause; a continuation, a finished sentence
        assert (before[-1] in ".?!") == (u["kind"] == "continuation")
    else:
        assert pause is None
        assert len(speech) == 1
        assert "..." not in u["text"]

    if u["kind"] == "backchannel":
        assert speech[0][1] - speech[0][0] < 0.6
