"""How the persona takes turns: when the caller has finished, and when talking over it counts.

Rule: one `TurnTaking` shapes a session's turn handling (end of turn, endpointing delays, barge-in,
false-interruption resume, the AEC warm-up); the worker, the tests and the benches build sessions
through `agent.pipeline` with one, so every arm a bench measures is a shape that can ship. The
end-of-turn model (`turn-detector-v1-mini`, local, in `livekit-local-inference`) runs once per
worker, in the library's inference process (`agent.end_of_turn`); a session without a worker
(benches, tests) loads it in its own process. A backchannel ("mm-hm", "right") the
caller says while the persona replies is not a turn (`without_backchannels`): the local model
gives no backchannel verdict (LiveKit Cloud's adaptive interruption would), and the library's
`min_interruption_words` would hold every barge-in until the STT has words, which a
non-streaming transcription model gives only after the caller stops.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from livekit import local_inference
from livekit.agents import inference, stt, vad
from livekit.agents.voice.turn import EndpointingOptions, InterruptionOptions, TurnHandlingOptions

from agent.config import Settings
from agent.end_of_turn import SharedTurnDetector, job_inference_executor, no_executor
from agent.log import get_logger

log = get_logger(__name__)

Detection = Literal["vad", "model"]
Endpointing = Literal["fixed", "dynamic"]

# The library's AEC warm-up: it ignores barge-in for the first 3 s of every agent speech.
LIBRARY_AEC_WARMUP_SECONDS = 3.0


@dataclass(frozen=True)
class TurnTaking:
    """A session's turn handling. `None` for a figure means the library's default (which differs
    between the VAD and the model: agent.turn_taking's tests pin what each resolves to)."""

    detection: Detection = "vad"
    endpointing: Endpointing = "fixed"
    min_delay: float | None = None  # seconds of silence before a turn may end
    max_delay: float | None = None  # the longest the model may hold a turn open
    aec_warmup: float | None = LIBRARY_AEC_WARMUP_SECONDS  # barge-in ignored this long; None: off
    min_interruption: float | None = None  # seconds of speech that count as a barge-in
    resume_false_interruption: bool = True
    false_interruption_timeout: float | None = None

    def turn_handling(
        self,
        vad_model: vad.VAD | None,
        detector: inference.TurnDetector | None,
        *,
        preemptive_generation: bool,
        preemptive_tts: bool = False,
    ) -> TurnHandlingOptions:
        if vad_model is None:
            detection: Any = None  # text sessions (tests): turns come whole
        elif self.detection == "model":
            if detector is None:
                raise ValueError("TURN_DETECTION=model needs the end-of-turn model (prewarm)")
            detection = detector
        else:
            detection = "vad"
        endpointing = EndpointingOptions(mode=self.endpointing)
        if self.min_delay is not None:
            endpointing["min_delay"] = self.min_delay
        if self.max_delay is not None:
            endpointing["max_delay"] = self.max_delay
        # VAD interruption works anywhere; the adaptive one needs LiveKit Cloud inference
        interruption = InterruptionOptions(
            mode="vad", resume_false_interruption=self.resume_false_interruption
        )
        if self.min_interruption is not None:
            interruption["min_duration"] = self.min_interruption
        if self.false_interruption_timeout is not None:
            interruption["false_interruption_timeout"] = self.false_interruption_timeout
        return TurnHandlingOptions(
            turn_detection=detection,
            endpointing=endpointing,
            interruption=interruption,
            preemptive_generation={
                "enabled": preemptive_generation,
                "preemptive_tts": preemptive_generation and preemptive_tts,
            },
        )

    def session_kwargs(self) -> dict[str, Any]:
        """AgentSession keyword arguments beside `turn_handling` (the library's own default is
        left implicit: given explicitly it would also override its SIP rule)."""
        if self.aec_warmup == LIBRARY_AEC_WARMUP_SECONDS:
            return {}
        return {"aec_warmup_duration": self.aec_warmup}


# A paused reply whose interruption brought no words (a cough, a backchannel the STT dropped)
# resumes after this much silence (library: 2 s). On the corpus 0.5 s resumes a backchannel's
# reply 0.85 s after it paused (1.0 s: 1.4 s) and never resumes over a true barge-in: while an
# end-of-turn decision is open the library lets it decide (commit and interrupt, or resume).
FALSE_INTERRUPTION_SECONDS = 0.5


# The longest the model may hold a finished-sounding turn open (library: 2.5 s). On the corpus
# the ends it doubts (P(end) < 0.42, about one in four) are answered 0.5 s sooner, and no pause of
# up to 1.5 s is cut off (the silence must last this long from the last word).
MAX_END_OF_TURN_SECONDS = 2.0


def from_settings(settings: Settings) -> TurnTaking:
    """The shape the worker ships, from TURN_DETECTION and AEC_WARMUP_SECONDS."""
    return TurnTaking(
        detection=settings.turn_detection,
        max_delay=MAX_END_OF_TURN_SECONDS if settings.turn_detection == "model" else None,
        aec_warmup=settings.aec_warmup_seconds or None,
        false_interruption_timeout=FALSE_INTERRUPTION_SECONDS,
    )


# English only: the P(end) below which the model holds the turn open (up to max_delay). The
# library ships 0.36; on the turn-taking corpus (piper speech, docs/performance.md) four thinking
# pauses ("um", "uh", "because") scored 0.367-0.398 and were cut off, while finished statements
# and questions scored 0.13-0.66. At 0.42 no pause of up to 1.5 s ends a turn, and about one
# finished end in four waits for max_delay instead of min_delay (through WebRTC more: see
# docs/performance.md). Measured on one synthetic voice: the margin is small, see the bench
# before changing it.
END_OF_TURN_THRESHOLD_EN = 0.42


def load_turn_detector(*, shared: bool = False) -> inference.TurnDetector:
    """The local end-of-turn model, explicitly the mini one (the automatic choice would pick
    LiveKit Cloud's in `dev` and `console`, which this worker never calls), with our English
    threshold (the library logs once that it differs from its default).

    `shared`: predict in the worker's inference process (`agent.end_of_turn`; a job process of a
    worker that registered its runner). Otherwise the weights (~244 MB, 0.16 s) load here, now,
    never at the first call's session start."""
    if not shared:
        local_inference.init_eot()
    return SharedTurnDetector(
        executor=job_inference_executor if shared else no_executor,
        unlikely_threshold={"en": END_OF_TURN_THRESHOLD_EN},
    )


# What a listener says to show they are following, not to take the turn (English; normalised:
# lower case, letters and spaces only). A longer utterance, or any other words, is a turn.
BACKCHANNELS: frozenset[str] = frozenset(
    {
        "mm",
        "mmm",
        "mm hm",
        "mhm",
        "hm",
        "hmm",
        "uh huh",
        "uh hum",
        "yeah",
        "yes",
        "yep",
        "yup",
        "right",
        "okay",
        "ok",
        "sure",
        "i see",
        "got it",
        "ah",
        "oh",
        "oh okay",
        "alright",
        "all right",
        "true",
        "exactly",
        "of course",
        "totally",
        "yeah yeah",
        "okay okay",
        "right right",
    }
)
_NOT_LETTERS = re.compile(r"[^a-z]+")
_TRANSCRIPTS = (
    stt.SpeechEventType.INTERIM_TRANSCRIPT,
    stt.SpeechEventType.PREFLIGHT_TRANSCRIPT,
    stt.SpeechEventType.FINAL_TRANSCRIPT,
)


def is_backchannel(text: str) -> bool:
    return _NOT_LETTERS.sub(" ", text.lower()).strip() in BACKCHANNELS


async def without_backchannels(
    events: AsyncIterable[stt.SpeechEvent | str], replying: Callable[[], bool]
) -> AsyncIterator[stt.SpeechEvent | str]:
    """The STT's events, less the transcripts of a backchannel said while `replying()`: with no
    words the caller's sound is no turn, so the reply goes on (or, paused by the VAD, resumes
    after the false-interruption timeout) instead of answering "mm-hm". Never the text in logs."""
    async for event in events:
        if (
            isinstance(event, stt.SpeechEvent)
            and event.type in _TRANSCRIPTS
            and event.alternatives
            and replying()
            and is_backchannel(event.alternatives[0].text)
        ):
            if event.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                log.info("turn.backchannel_ignored")
            continue
        yield event
