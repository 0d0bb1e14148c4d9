"""The voice pipeline: OpenAI STT/LLM/TTS and the prewarmed Silero VAD (`load_vad`) in an
AgentSession.

Rule: keys and base URLs are passed explicitly from Settings (the plugins would otherwise read
the environment), and both the real worker and the tests build sessions through here so that
what is tested is what runs.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

from livekit import local_inference
from livekit.agents import AgentSession, APIConnectOptions, inference, llm, stt, tts, vad
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.plugins import openai, silero

from agent.close_wait import wait_only_for_words_in_flight
from agent.config import Settings
from agent.first_phrase import FirstPhraseTokenizer
from agent.models import Scenario
from agent.turn_taking import TurnTaking

T = TypeVar("T")
P = ParamSpec("P")

# The library's default (3 retries, 2 s apart, 5 s read timeout) means ~25 s of silence before
# an LLM failure surfaces; a caller should hear the apology line well before that.
SESSION_CLOSE_TRANSCRIPT_TIMEOUT = 5.0


PRELOAD_ENV = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"


def skip_unused_model_preload(environ: MutableMapping[str, str]) -> None:
    """The library would preload the local end-of-turn model's weights (~244 MB RSS) into the
    forkserver that every job process forks from. No job process uses them: with
    TURN_DETECTION=model the model runs once per worker in the inference process
    (`agent.end_of_turn`), with `vad` not at all. Preloaded, every job process would still count
    a share of them in its PSS. An operator's explicit value wins."""
    environ.setdefault(PRELOAD_ENV, "0")


# livekit-plugins-silero's defaults, which the turn taking was tuned and measured with; the
# native engine's own defaults differ (0.25 s of silence ends speech there)
VAD_MIN_SPEECH = 0.05
VAD_MIN_SILENCE = 0.55
VAD_PREFIX_PADDING = 0.5
VAD_ACTIVATION = 0.5


class InlineExecutor(Executor):
    """Runs each call at once, on the calling thread. For the native VAD: one 32 ms window is
    20-40 us of inference, while handing it to a thread and back (the library's default, a
    thread per stream) costs the event loop ~230 us of CPU per window (docs/performance.md)."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:  # the awaiting stream gets it, as from a thread
            future.set_exception(error)
        return future


def load_vad(settings: Settings) -> vad.VAD:
    """The process's VAD (prewarm; a bench's or a test's session likewise), per VAD_ENGINE.
    `native` runs Silero in livekit-local-inference (its weights loaded here, once per process;
    each stream infers inline on the event loop: `InlineExecutor`), `onnxruntime` in the
    plugin."""
    if settings.vad_engine == "native":
        local_inference.init_vad()
        return inference.VAD(
            min_speech_duration=VAD_MIN_SPEECH,
            min_silence_duration=VAD_MIN_SILENCE,
            prefix_padding_duration=VAD_PREFIX_PADDING,
            activation_threshold=VAD_ACTIVATION,
            executor=InlineExecutor(),
        )
    return silero.VAD.load(
        min_speech_duration=VAD_MIN_SPEECH,
        min_silence_duration=VAD_MIN_SILENCE,
        prefix_padding_duration=VAD_PREFIX_PADDING,
        activation_threshold=VAD_ACTIVATION,
    )


def _openai_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"api_key": settings.openai_api_key.get_secret_value()}
    if settings.openai_base_url:
        kwargs["base_url"] = settings.openai_base_url
    return kwargs


def build_stt(settings: Settings, scenario: Scenario | None = None) -> stt.STT[Any]:
    language = (scenario.language if scenario else None) or settings.language
    # realtime: audio streams to the provider while the caller speaks, so the transcript is
    # final about when the turn ends; batch uploads the whole utterance only after the end of
    # turn, and the LLM waits for that round trip (docs/performance.md, voice-to-voice). The
    # plugin's server VAD (350 ms of silence) only segments transcripts: our Silero VAD still
    # ends the turn, so a short pause inside an utterance never does.
    realtime = settings.stt_mode == "realtime"
    extra: dict[str, Any] = {}
    if realtime:  # the plugin's server VAD, with our silence (STT_SILENCE_MS)
        extra["turn_detection"] = {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 600,
            "silence_duration_ms": settings.stt_silence_ms,
        }
    return openai.STT(
        model=settings.stt_model,
        language=language,
        use_realtime=realtime,
        **extra,
        **_openai_kwargs(settings),
    )


def build_llm(settings: Settings) -> llm.LLM[Any]:
    return openai.LLM(model=settings.llm_model, **_openai_kwargs(settings))


def build_tts(settings: Settings, scenario: Scenario | None = None) -> tts.TTS[Any]:
    voice = (scenario.voice if scenario else None) or settings.tts_voice
    # pcm: no decoder in the path, and the lowest time to first byte
    speech = openai.TTS(
        model=settings.tts_model, voice=voice, response_format="pcm", **_openai_kwargs(settings)
    )
    if not settings.first_phrase:
        return speech  # the library wraps it with its own sentence tokenizer
    return tts.StreamAdapter(tts=speech, sentence_tokenizer=FirstPhraseTokenizer())


def connect_options(settings: Settings) -> SessionConnectOptions:
    return SessionConnectOptions(
        llm_conn_options=APIConnectOptions(
            max_retry=settings.llm_max_retry, retry_interval=0.5, timeout=settings.llm_timeout
        ),
    )


def build_session(
    settings: Settings,
    vad_model: vad.VAD | None,
    *,
    scenario: Scenario | None = None,
    userdata: T | None = None,
    stt_model: stt.STT[Any] | None = None,
    llm_model: llm.LLM[Any] | None = None,
    tts_model: tts.TTS[Any] | None = None,
    turn_taking: TurnTaking | None = None,
    turn_detector: inference.TurnDetector | None = None,
) -> AgentSession[T]:
    """The persona session. Providers may be injected (tests, benchmarks); by default they are
    the OpenAI plugins configured from settings. `turn_taking` (agent.turn_taking) shapes the
    end of turn and barge-in; `turn_detector` is the process's end-of-turn model, when used."""
    shape = turn_taking or TurnTaking()
    kwargs: dict[str, Any] = shape.session_kwargs()
    if userdata is not None:
        kwargs["userdata"] = userdata
    session: AgentSession[T] = AgentSession(
        stt=stt_model or build_stt(settings, scenario),
        llm=llm_model or build_llm(settings),
        tts=tts_model or build_tts(settings, scenario),
        vad=vad_model,
        # With the VAD, the end of turn waits for Silero's min_silence_duration (0.55 s, which
        # covers the library's 0.5 s endpointing min_delay): a ~300 ms pause never ends a turn.
        # Preemptive generation (PREEMPTIVE_GENERATION, on by default) starts the LLM on the
        # streaming STT's final transcript, before that silence is over: ~150 ms faster; an LLM
        # failure then surfaces while the caller still speaks, so its apology waits for the
        # end of the turn (agent.call.session.attach_error_apology; docs/performance.md).
        turn_handling=shape.turn_handling(
            vad_model,
            turn_detector,
            preemptive_generation=settings.preemptive_generation,
            preemptive_tts=settings.preemptive_tts,
        ),
        session_close_transcript_timeout=SESSION_CLOSE_TRANSCRIPT_TIMEOUT,
        conn_options=connect_options(settings),
        **kwargs,
    )
    # the bound applies only while the caller's words are in flight: a hang-up ends at once
    wait_only_for_words_in_flight(session, SESSION_CLOSE_TRANSCRIPT_TIMEOUT)
    return session


def build_apology_session(settings: Settings, vad_model: vad.VAD | None) -> AgentSession[None]:
    """TTS only: the backend is down, so there is no scenario and nothing to think about."""
    return AgentSession(
        tts=build_tts(settings),
        vad=vad_model,
        turn_handling={"turn_detection": None, "interruption": {"enabled": False}},
    )
