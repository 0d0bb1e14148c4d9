"""`Settings`: the worker's variables, their validators and the values derived from them.

Rule: nothing reads `os.environ` after `load_settings()` (agent.config.commands); the validated
`Settings` object is passed explicitly to the server, the plugins and the backend client. Secrets
are `SecretStr` so a repr or a log line never shows them. Each URL and header-key rule is one
function in agent.endpoints that the clients apply too, so nothing that passes boot is refused on
the first call; every other text setting is one of agent.config.fields' types. A derived value
(a timeout another one implies) is a property here, never computed twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.config.fields import (
    AgentName,
    HeaderSecret,
    LogLevel,
    LoopBlockMs,
    SecretText,
    Text,
    TextPath,
)
from agent.endpoints import check_backend_url, check_livekit_url

# An idle job process takes 75-125 MB PSS, the metric the library's limit compares to
# (docs/performance.md): a lower JOB_MEMORY_LIMIT_MB kills every call.
MIN_JOB_MEMORY_LIMIT_MB = 200

# livekit.agents.telemetry.loop_monitor's variable and default (0 turns the monitor off)
LOOP_BLOCK_WARN_ENV = "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS"
LIBRARY_LOOP_BLOCK_WARN_MS = 100.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # LiveKit
    livekit_url: str = Field(min_length=1, alias="LIVEKIT_URL")
    livekit_api_key: Text = Field(alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretText = Field(alias="LIVEKIT_API_SECRET")
    agent_name: AgentName | None = Field(default=None, alias="AGENT_NAME")
    livekit_recording: bool = Field(default=False, alias="LIVEKIT_RECORDING")
    # the library's default: about 130 s of retries, so a short LiveKit blip does not take the
    # whole fleet out of service (a worker that gives up exits 3 after draining its calls)
    livekit_max_retry: int = Field(default=16, ge=0, le=100, alias="LIVEKIT_MAX_RETRY")

    # OpenAI (or a compatible API)
    openai_api_key: HeaderSecret = Field(alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    llm_model: Text = Field(default="gpt-4.1-mini", alias="LLM_MODEL")
    stt_model: Text = Field(default="gpt-4o-mini-transcribe", alias="STT_MODEL")
    # realtime: the transcript streams while the caller speaks and is ready when the turn ends
    # (docs/performance.md, voice-to-voice); batch: one upload after the end of the turn
    stt_mode: Literal["realtime", "batch"] = Field(default="realtime", alias="STT_MODE")
    # start the LLM on the final transcript, before the end-of-turn silence is over (~150 ms
    # faster; docs/performance.md). An LLM failure then surfaces while the caller is still
    # speaking: the error handler defers the apology until the turn is over (agent.call.session)
    preemptive_generation: bool = Field(default=True, alias="PREEMPTIVE_GENERATION")
    # with preemptive generation, also synthesise the early reply's first words before the turn
    # is confirmed: its audio is ready when the turn ends (~0.3 s sooner where the end-of-turn
    # model held the turn); a reply the caller talks on over is a wasted TTS request too
    # (docs/performance.md, voice to voice)
    preemptive_tts: bool = Field(default=True, alias="PREEMPTIVE_TTS")
    # with the end-of-turn model, an early reply to a transcript that sounds unfinished ("so",
    # "and", "um", a trailing comma) waits for the model's verdict instead of starting at once:
    # a caller's thinking pause no longer costs a thrown-away LLM request (agent/early_reply.py;
    # docs/performance.md, voice to voice)
    preemptive_hold: bool = Field(default=True, alias="PREEMPTIVE_HOLD")
    # with PREEMPTIVE_HOLD and the end-of-turn model: the longest the model may hold a turn open
    # once its transcript sounds finished ("How have you been sleeping?"), against its 2 s for
    # every doubted end; 2 (or more) leaves every hold at 2 s (docs/performance.md, voice to voice)
    finished_max_delay_seconds: float = Field(
        default=1.0, ge=0.3, le=10.0, alias="FINISHED_MAX_DELAY_SECONDS"
    )
    # realtime STT: the provider's server VAD commits (and finalises) the transcript after this
    # much silence (the plugin's default 350). It only segments the transcript: our end of turn
    # decides when the caller has finished
    stt_silence_ms: int = Field(default=350, ge=100, le=2000, alias="STT_SILENCE_MS")
    # what decides that the caller has finished (agent/turn_taking.py; docs/performance.md,
    # turn taking): the local end-of-turn model on the caller's audio (no thinking pause of up
    # to 1.5 s cut off on the corpus, against 12 of 14 with the VAD), or the VAD's silence
    turn_detection: Literal["vad", "model"] = Field(default="model", alias="TURN_DETECTION")
    # seconds of each agent speech during which the caller cannot barge in (the library's
    # default is 3, its AEC warm-up); browsers and phones cancel their own echo, so 0 (tests:
    # the e2e caller and Chromium never self-interrupt). Raise it for a line that echoes.
    aec_warmup_seconds: float = Field(default=0.0, ge=0, le=10, alias="AEC_WARMUP_SECONDS")
    # the room input's automatic gain control (the library's default is on): browsers already
    # apply their own (livekit-client's default capture), so off; on for a line with quiet
    # callers. Off spares the job process one FFI round trip per 50 ms of caller audio.
    auto_gain_control: bool = Field(default=False, alias="AUTO_GAIN_CONTROL")
    # the caller's audio reaches the session in frames this long (the library's 50). Each frame
    # costs an FFI event and a pass through the VAD, STT and end-of-turn inputs: 100 spends 28 %
    # less job Python CPU, but the caller's words wait longer for their frame to fill (barge-in
    # and replies ~40-50 ms later, a thinking pause's transcript split once in 14), so not
    # shipped (docs/performance.md, capacity as deployed, second round)
    input_frame_ms: int = Field(default=50, ge=10, le=200, alias="INPUT_FRAME_MS")
    # which Silero runs the VAD: `native` (livekit-local-inference, the library's Rust build,
    # 20-40 us per window inline on the loop) or `onnxruntime` (livekit-plugins-silero, on the
    # loop too); the same model and options (docs/performance.md, capacity: native costs less
    # CPU and memory per call)
    vad_engine: Literal["native", "onnxruntime"] = Field(default="native", alias="VAD_ENGINE")
    tts_model: Text = Field(default="gpt-4o-mini-tts", alias="TTS_MODEL")
    # the TTS starts on the reply's first phrase (agent/first_phrase.py) instead of its whole
    # first sentence; false: the library's sentences (docs/performance.md, voice to voice)
    first_phrase: bool = Field(default=True, alias="FIRST_PHRASE")
    tts_voice: Text = Field(default="ash", alias="TTS_VOICE")
    language: Text = Field(default="en", min_length=2, max_length=16, alias="LANGUAGE")
    # >= 1 s: a reply's first token alone takes about half a second, so less fails requests at
    # random (at 1e-6, every one) and the caller hears the LLM-error line
    llm_timeout: float = Field(default=8.0, ge=1, le=120, alias="LLM_TIMEOUT")
    llm_max_retry: int = Field(default=1, ge=0, le=10, alias="LLM_MAX_RETRY")

    # Backend (both or neither; neither = embedded local default)
    backend_url: str | None = Field(default=None, alias="BACKEND_URL")
    internal_service_key: HeaderSecret | None = Field(default=None, alias="INTERNAL_SERVICE_KEY")
    # >= 1 s: a new TLS connection plus the answer often takes longer, so scenario fetches and
    # deliveries would fail at random (at 1e-6, every one)
    backend_timeout: float = Field(default=5.0, ge=1, le=60, alias="BACKEND_TIMEOUT")

    # Call limits and delivery
    agent_data_dir: TextPath = Field(default=Path("data"), alias="AGENT_DATA_DIR")
    max_call_seconds: int = Field(default=1800, ge=10, le=6 * 3600, alias="MAX_CALL_SECONDS")
    no_show_seconds: int = Field(default=60, ge=1, le=3600, alias="NO_SHOW_SECONDS")
    delivery_deadline: float = Field(default=30.0, ge=1, le=600, alias="DELIVERY_DEADLINE")
    # the transcript so far to the backend while a call is live (agent/delivery/checkpoint.py):
    # at most one per this many seconds, after assistant turns; 0 turns checkpoints off
    checkpoint_seconds: float = Field(default=5.0, ge=0, le=300, alias="CHECKPOINT_SECONDS")
    # a recorded call (metadata `record: true`) is cut at this size (the backend takes 64 MiB)
    recording_max_mb: int = Field(default=64, ge=2, le=64, alias="RECORDING_MAX_MB")
    drain_timeout: int | None = Field(default=None, ge=0, alias="DRAIN_TIMEOUT")

    # Worker capacity and process management
    # >= 0.1: a worker's load (CPU) is never that close to 0, so it would refuse every job
    load_threshold: float = Field(default=0.7, ge=0.1, alias="LOAD_THRESHOLD")
    num_idle_processes: int | None = Field(default=None, ge=0, le=64, alias="NUM_IDLE_PROCESSES")
    job_memory_warn_mb: float = Field(default=1000, gt=0, alias="JOB_MEMORY_WARN_MB")
    # 0: no limit; otherwise at least MIN_JOB_MEMORY_LIMIT_MB (_check_job_memory_limit)
    job_memory_limit_mb: float = Field(default=1500, ge=0, alias="JOB_MEMORY_LIMIT_MB")
    # >= 1 s: prewarm loads the VAD and opens the journal; less and no job process ever starts
    initialize_process_timeout: float = Field(
        default=10.0, ge=1, le=600, alias="INITIALIZE_PROCESS_TIMEOUT"
    )
    shutdown_process_timeout: float = Field(
        default=10.0, ge=3, le=600, alias="SHUTDOWN_PROCESS_TIMEOUT"
    )

    # Operations
    log_level: LogLevel = Field(default="INFO", alias="LOG_LEVEL")
    # the library's event-loop monitor (a warning when a process's loop is blocked this long, with
    # where): on at the library's 100 ms here, off (0) under `start` (StartSettings). It wakes
    # every 20 ms in every process (main, inference, each job), about 10 ms of CPU per second
    # each: ~0.02-0.03 CPU-s per call-second, a fifth of a deployed call (docs/performance.md)
    loop_block_warn_ms: LoopBlockMs = Field(
        default=LIBRARY_LOOP_BLOCK_WARN_MS, alias=LOOP_BLOCK_WARN_ENV
    )
    port: int = Field(default=8081, ge=0, le=65535, alias="PORT")
    # `python -m agent playground`: always on 127.0.0.1, never another interface
    playground_port: int = Field(default=8089, ge=0, le=65535, alias="PLAYGROUND_PORT")
    # Prometheus `/metrics` of the main and every job process (agent/ops/metrics.py); unset: off
    metrics_port: int | None = Field(default=None, ge=0, le=65535, alias="METRICS_PORT")
    # OTLP traces (agent/tracing.py) when either standard endpoint variable is set; the exporter
    # reads the other OTEL_EXPORTER_OTLP_* variables (headers, timeout) itself
    otlp_endpoint: Text | None = Field(default=None, alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    otlp_traces_endpoint: Text | None = Field(
        default=None, alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    # transcript text and prompts in span attributes: personal data, off unless asked for
    trace_include_text: bool = Field(default=False, alias="TRACE_INCLUDE_TEXT")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("livekit_url")
    @classmethod
    def _check_livekit_url(cls, value: str) -> str:
        return check_livekit_url(value)

    @field_validator("openai_base_url", "backend_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator(
        "internal_service_key",
        "agent_name",
        "drain_timeout",
        "otlp_endpoint",
        "otlp_traces_endpoint",
        mode="before",
    )
    @classmethod
    def _empty_optional_is_unset(cls, value: object, info: ValidationInfo) -> object:
        # where the field is required (AGENT_NAME for `start`) "" stays, and the text rule says
        # "is empty" rather than "not a valid string"
        if value == "" and not cls.model_fields[info.field_name or ""].is_required():
            return None
        return value

    @field_validator("num_idle_processes", "metrics_port", mode="before")
    @classmethod
    def _empty_count_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("openai_base_url")
    @classmethod
    def _check_openai_url(cls, value: str | None) -> str | None:
        # the API key travels with every request: the backend's rule applies. The value is kept
        # as given (a trailing slash is the OpenAI client's business).
        if value is None:
            return None
        check_backend_url(value, "OPENAI_BASE_URL")
        return value

    @field_validator("backend_url")
    @classmethod
    def _check_backend_url(cls, value: str | None) -> str | None:
        # the same function HttpBackend applies, so what passes here is never refused there
        return None if value is None else check_backend_url(value, "BACKEND_URL")

    @field_validator("job_memory_limit_mb")
    @classmethod
    def _check_job_memory_limit(cls, value: float) -> float:
        if 0 < value < MIN_JOB_MEMORY_LIMIT_MB:
            raise ValueError(
                "is too small: an idle job process already takes 75-125 MB, so this limit "
                "kills every call"
            )
        return value

    @model_validator(mode="after")
    def _backend_pair(self) -> Settings:
        if (self.backend_url is None) != (self.internal_service_key is None):
            missing = "INTERNAL_SERVICE_KEY" if self.internal_service_key is None else "BACKEND_URL"
            raise ValueError(
                f"{missing}: BACKEND_URL and INTERNAL_SERVICE_KEY go together (set both or neither)"
            )
        if self.drain_timeout is not None and self.drain_timeout < self.max_call_seconds:
            raise ValueError(
                "DRAIN_TIMEOUT: must be at least MAX_CALL_SECONDS, or a draining worker cuts calls"
            )
        return self

    # Derived values: one place for the timing rules the design states.
    @property
    def effective_drain_timeout(self) -> int:
        return self.drain_timeout if self.drain_timeout is not None else self.max_call_seconds + 60

    @property
    def session_end_timeout(self) -> float:
        return self.delivery_deadline + 10

    @property
    def backstop_timeout(self) -> float:
        """The shutdown-callback backstop's budget: the parent kills the process after
        shutdown_process_timeout, so leave it 2 s to spare."""
        return self.shutdown_process_timeout - 2

    @property
    def library_environment(self) -> dict[str, str]:
        """The library's own variables, as validated here: it reads them from the environment in
        each of its processes (the main one, and the job and inference processes forked later),
        so the main process exports them before the worker starts."""
        return {LOOP_BLOCK_WARN_ENV: f"{self.loop_block_warn_ms:g}"}

    @property
    def traces_enabled(self) -> bool:
        return self.otlp_endpoint is not None or self.otlp_traces_endpoint is not None

    @property
    def has_backend(self) -> bool:
        return self.backend_url is not None

    @property
    def agent_name_or_default(self) -> str:
        return self.agent_name or "roleplay-agent-dev"
