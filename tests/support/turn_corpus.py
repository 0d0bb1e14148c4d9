"""The committed turn-taking corpus (tests/audio/turns/, made by bench/make_turn_corpus.py): its
manifest's entries, read as they are, and what an STT hears on each side of a pause."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

TURNS: Final = Path(__file__).resolve().parents[1] / "audio" / "turns"


def utterance(utterance_id: str) -> dict[str, Any]:
    """The manifest's entry for one utterance (its text marks a pause with "...")."""
    manifest = json.loads((TURNS / "manifest.json").read_text(encoding="utf-8"))
    [found] = [u for u in manifest["utterances"] if u["id"] == utterance_id]
    return dict(found)


def pause_parts(said: dict[str, Any]) -> list[str]:
    """The words before the pause mark and after it: one STT segment each (the realtime
    transcription's server VAD commits after 350 ms of silence)."""
    return [" ".join(p.split()) for p in str(said["text"]).split("...") if p.strip()]
