"""How much the end-of-turn model's P(end) moves when the caller's audio is only resampled, as on
its way through WebRTC (48 kHz Opus in the room, 24 kHz room input, 16 kHz for the model).

Rule: prints figures and writes JSON; never asserts. For every finished statement and question
of the turn-taking corpus, the model (`turn-detector-v1-mini`, in this process) scores the 1.2 s
window that ends 0.2 s after the true end of speech (where the library asks: the VAD has heard
200 ms of silence), once on the WAV as it is and once after each resampling path, with the rtc
SDK's own resampler (the FFI's; the turn-detector stream resamples its input with QUICK quality).
Opus coding and packet timing are not modelled: this isolates the resampling alone.

    uv run python bench/probe_eot_resampling.py [--json PATH] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
import wave
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from livekit import local_inference, rtc

from agent.turn_taking import END_OF_TURN_THRESHOLD_EN
from bench._common import RESULTS_DIR, machine_info, write_result

TURNS: Final = Path(__file__).resolve().parents[1] / "tests" / "audio" / "turns"
WINDOW: Final = 19200  # the model's 1.2 s at 16 kHz
ASKED_AFTER: Final = 0.2  # seconds of silence before the library asks for a prediction
HIGH: Final = rtc.AudioResamplerQuality.HIGH
QUICK: Final = rtc.AudioResamplerQuality.QUICK
# name -> the rates the audio goes through after 16 kHz, with the quality of each step
PATHS: Final[dict[str, list[tuple[int, rtc.AudioResamplerQuality]]]] = {
    "48k->16k (room input at 16 kHz)": [(48000, HIGH), (16000, HIGH)],
    "48k->24k->16k HIGH": [(48000, HIGH), (24000, HIGH), (16000, HIGH)],
    "48k->24k->16k QUICK (as shipped)": [(48000, HIGH), (24000, HIGH), (16000, QUICK)],
}


def read_pcm(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        assert wav.getframerate() == 16000 and wav.getnchannels() == 1
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)


def resample(
    pcm: np.ndarray, rate_in: int, rate_out: int, quality: rtc.AudioResamplerQuality
) -> Any:
    resampler = rtc.AudioResampler(
        input_rate=rate_in, output_rate=rate_out, num_channels=1, quality=quality
    )
    step = rate_in // 100
    out: list[np.ndarray] = []
    for i in range(0, len(pcm) - step + 1, step):
        frame = rtc.AudioFrame(pcm[i : i + step].tobytes(), rate_in, 1, step)
        out.extend(np.frombuffer(f.data, dtype=np.int16) for f in resampler.push(frame))
    out.extend(np.frombuffer(f.data, dtype=np.int16) for f in resampler.flush())
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--json", type=Path, default=RESULTS_DIR / "probe_eot_resampling.json", metavar="PATH"
    )
    parser.add_argument("--smoke", action="store_true", help="three utterances, to check it runs")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    local_inference.init_eot()
    model = local_inference.EOT()
    manifest = json.loads((TURNS / "manifest.json").read_text())
    rows: list[dict[str, Any]] = []
    finished = [u for u in manifest["utterances"] if u["kind"] in ("statement", "question")]
    for item in finished[:3] if args.smoke else finished:
        original = read_pcm(TURNS / item["file"])
        asked_at = int((item["end_of_speech"] + ASKED_AFTER) * 16000)
        scores: dict[str, float] = {}
        for name, steps in {"as recorded": [], **PATHS}.items():
            pcm, rate = original, 16000
            for rate_out, quality in steps:
                pcm, rate = resample(pcm, rate, rate_out, quality), rate_out
            scores[name] = round(float(model.predict(pcm[:asked_at][-WINDOW:])), 3)
        rows.append({"file": item["file"], "p_end": scores})
    names = list(rows[0]["p_end"]) if rows else []
    summary = {
        name: {
            "mean": round(float(np.mean([r["p_end"][name] for r in rows])), 3),
            "held": sum(r["p_end"][name] < END_OF_TURN_THRESHOLD_EN for r in rows),
            "max_shift_from_recorded": round(
                max(abs(r["p_end"][name] - r["p_end"]["as recorded"]) for r in rows), 3
            ),
        }
        for name in names
    }
    print(f"P(end) 0.2 s after the true end; below {END_OF_TURN_THRESHOLD_EN} the turn is held")
    print(f"{'file':34}" + "".join(f"{n[:24]:>26}" for n in names))
    for row in rows:
        print(f"{row['file']:34}" + "".join(f"{row['p_end'][n]:>26.3f}" for n in names))
    for name, figures in summary.items():
        print(f"  {name}: {figures}")
    write_result(
        args.json,
        {
            "bench": "probe_eot_resampling",
            "smoke": args.smoke,
            "machine": machine_info(),
            "threshold_en": END_OF_TURN_THRESHOLD_EN,
            "rows": rows,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
