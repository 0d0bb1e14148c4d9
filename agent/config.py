"""Settings from the environment and `.env`, validated once at boot.

Rule: nothing reads `os.environ` after `load_settings()`; the validated `Settings` object is passed
explicitly to the server, the plugins and the backend client. Secrets are `SecretStr` so a repr or a
log line never shows them, and a validation failure is reported by variable name, never by value.
Each URL and header-key rule is one function in agent.endpoints that the clients apply too, so
nothing that passes boot is refused on the first call. Every other text setting (a key, a secret,
a name, a model, a path) is a `Text`/`SecretText`/`TextPath`: one line of printable text with
nothing around it, refused (never stripped) otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.endpoints import (
    check_backend_url,
    check_livekit_url,
    header_secret_problem,
    text_problem,
)

# The commands that run a worker or a job and therefore need credentials.
RUN_COMMANDS = frozenset({"dev", "start", "console", "connect"})

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _checked(problem_of: Callable[[str], str | None]) -> BeforeValidator:
    """A validator that applies one of agent.endpoints' text rules to the raw text, before any
    length or type check, so the message says what is wrong with it. The error's location names
    the variable; the message says what is wrong, never the value."""

    def check(value: object) -> object:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, str) and (problem := problem_of(text)) is not None:
            raise ValueError(problem)
        return value

    return BeforeValidator(check)


# The text rule (agent.endpoints.text_problem) as types, so every such setting gets it by its
# declaration: an empty LIVEKIT_API_SECRET otherwise ends in a library traceback, and a trailing
# newline in a 401 loop; a model or voice name with one fails every call.
Text = Annotated[str, _checked(text_problem)]
SecretText = Annotated[SecretStr, _checked(text_problem)]
# sent in an HTTP header on every request (OPENAI_API_KEY, INTERNAL_SERVICE_KEY): also ASCII
HeaderSecret = Annotated[SecretStr, _checked(header_secret_problem)]
# a directory: "/data\n" would put the journal beside the volume, not on it
TextPath = Annotated[Path, _checked(text_problem)]
# what LiveKit dispatches by (AGENT_NAME): the worker's, `start`'s and the watcher's one rule
AgentName = Annotated[str, Field(max_length=128), _checked(text_problem)]

# An idle job process takes 75-125 MB PSS, the metric the library's limit compares to
# (docs/performance.md): a lower JOB_MEMORY_LIMIT_MB kills every call.
MIN_JOB_MEMORY_LIMIT_MB = 200

# How to fix each variable, shown next to its name when it is missing or invalid.
HINTS: dict[str, str] = {
    "LIVEKIT_URL": "the LiveKit server URL, e.g. wss://my-project.livekit.cloud",
    "LIVEKIT_API_KEY": "an API key of the LiveKit project (Settings > Keys)",
    "LIVEKIT_API_SECRET": "the API secret that belongs to LIVEKIT_API_KEY",
    "OPENAI_API_KEY": "an OpenAI API key (sk-...)",
    "OPENAI_BASE_URL": "an https:// URL of an OpenAI-compatible API (http only to localhost)",
    "AGENT_NAME": "the agent name LiveKit dispatches by, e.g. roleplay-agent (required for start)",
    "BACKEND_URL": "https://your-backend (plain http only to localhost, 127.x.x.x or [::1]); "
    "unset = embedded default",
    "INTERNAL_SERVICE_KEY": "the backend's internal service key; set it with BACKEND_URL",
    "PORT": "a TCP port number for the health server (0-65535; 0 picks a free one)",
    "PLAYGROUND_PORT": "a TCP port for `python -m agent playground` on 127.0.0.1 (0-65535)",
    "METRICS_PORT": "a TCP port for Prometheus /metrics (0-65535; unset turns metrics off)",
    "AGENT_DATA_DIR": "a writable directory for the journal (e.g. /data in the image)",
    "RECORDING_MAX_MB": "the size a recorded call is cut at, 2-64 (MiB; the backend takes 64)",
    "DRAIN_TIMEOUT": "seconds a draining worker waits for live calls (>= MAX_CALL_SECONDS)",
    "LLM_MODEL": "a chat model name, or leave it unset for gpt-4.1-mini",
    "STT_MODEL": "a transcription model name, or leave it unset for gpt-4o-mini-transcribe",
    "TTS_MODEL": "a speech model name, or leave it unset for gpt-4o-mini-tts",
    "TTS_VOICE": "a voice of the speech model, or leave it unset for ash",
    "LANGUAGE": "a language code for the STT, e.g. en or pt-BR",
    "TURN_DETECTION": "model (the local end-of-turn model) or vad (the VAD's silence)",
    "AEC_WARMUP_SECONDS": "seconds of agent speech the caller cannot barge into, 0-10",
    "LLM_TIMEOUT": "seconds an LLM request may take, 1-120 (less fails every request)",
    "BACKEND_TIMEOUT": "seconds a backend request may take, 1-60 (less fails every request)",
    "INITIALIZE_PROCESS_TIMEOUT": "seconds a job process gets to prewarm, 1-600 "
    "(loading the VAD alone takes longer than 1 s)",
    "LOAD_THRESHOLD": "the load above which the worker takes no new job, >= 0.1 "
    "(below that the worker counts as full and refuses every job)",
    "JOB_MEMORY_LIMIT_MB": f"0 (no limit) or at least {MIN_JOB_MEMORY_LIMIT_MB} (MB)",
}


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
    # which Silero runs the VAD: `native` (livekit-local-inference, the library's Rust build,
    # off the event loop) or `onnxruntime` (livekit-plugins-silero); the same model and options
    # (docs/performance.md, capacity: native costs less CPU and memory per call)
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
    def traces_enabled(self) -> bool:
        return self.otlp_endpoint is not None or self.otlp_traces_endpoint is not None

    @property
    def has_backend(self) -> bool:
        return self.backend_url is not None

    @property
    def agent_name_or_default(self) -> str:
        return self.agent_name or "roleplay-agent-dev"


class StartSettings(Settings):
    """`start` takes production calls: it must dispatch by an explicit agent name."""

    agent_name: AgentName = Field(alias="AGENT_NAME")


# `python -m agent journal ...` (agent/ops/journal_cli.py): the operator's commands.
JOURNAL_COMMAND = "journal"
JOURNAL_RETRY_COMMAND = "journal-retry"


class JournalSettings(Settings):
    """`journal status|list|export` read AGENT_DATA_DIR and nothing else. Every other variable
    is ignored, not validated: an operator must be able to look at the journal of a worker whose
    LiveKit or OpenAI settings are missing or wrong. The credential fields get defaults that
    nothing on this path reads (defaults are not validated here, so they may be empty)."""

    model_config = SettingsConfigDict(validate_default=False)
    USED: ClassVar[frozenset[str]] = frozenset({"AGENT_DATA_DIR"})

    livekit_url: str = Field(default="", alias="LIVEKIT_URL")
    livekit_api_key: str = Field(default="", alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretStr = Field(default=SecretStr(""), alias="LIVEKIT_API_SECRET")
    openai_api_key: SecretStr = Field(default=SecretStr(""), alias="OPENAI_API_KEY")

    @model_validator(mode="before")
    @classmethod
    def _only_used(cls, data: object) -> object:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if str(key).upper() in cls.USED}
        return data


class JournalRetrySettings(JournalSettings):
    """`journal retry` also posts transcripts: the backend pair (or its absence: the embedded
    default) and the delivery budget, validated by the same rules as the worker's."""

    USED: ClassVar[frozenset[str]] = frozenset(
        {
            "AGENT_DATA_DIR",
            "BACKEND_URL",
            "INTERNAL_SERVICE_KEY",
            "BACKEND_TIMEOUT",
            "DELIVERY_DEADLINE",
        }
    )


class SettingsError(Exception):
    """Bad or missing configuration: `problems` maps each variable name to how to fix it."""

    def __init__(self, problems: dict[str, str], *, subject: str = "the worker") -> None:
        self.problems = problems
        self.subject = subject  # what cannot start: the worker, or `watch`'s watcher
        super().__init__(self.render())

    def render(self) -> str:
        lines = [
            f"configuration error: {self.subject} cannot start. Fix these environment variables"
        ]
        lines.append("(in the environment or in .env):")
        for name, why in self.problems.items():
            lines.append(f"  - {name}: {why}")
        return "\n".join(lines)


def _problems_from(error: ValidationError) -> dict[str, str]:
    problems: dict[str, str] = {}
    for item in error.errors(include_input=False, include_url=False):
        loc = [str(part) for part in item["loc"]]
        message = str(item["msg"]).removeprefix("Value error, ")
        if loc:
            name = loc[0]
            message = message.removeprefix(f"{name}: ")  # the shared check_* rules name it too
        elif ":" in message and message.split(":", 1)[0].isupper():
            name, message = (part.strip() for part in message.split(":", 1))
        else:
            name = "settings"
        if item["type"] == "missing":
            message = "missing"
        hint = HINTS.get(name)
        problems[name] = f"{message} (set it to {hint})" if hint else message
    return problems


def check_data_dir(settings: Settings) -> None:
    """The journal must open (a writable directory, WAL allowed) before we take calls: every job
    process opens it in prewarm, and a worker whose jobs cannot start would keep accepting
    calls it can never serve."""
    from agent.journal import Journal

    try:
        Journal.in_dir(settings.agent_data_dir).close()
    except Exception as error:
        raise SettingsError(
            {
                "AGENT_DATA_DIR": f"the journal cannot be opened there ({type(error).__name__}: "
                f"{error}) (set it to {HINTS['AGENT_DATA_DIR']})"
            }
        ) from None


def load_settings(command: str | None = None, env_file: str | Path | None = ".env") -> Settings:
    """Validate the environment once. Raises SettingsError naming every bad variable."""
    models: dict[str | None, type[Settings]] = {
        "start": StartSettings,
        JOURNAL_COMMAND: JournalSettings,
        JOURNAL_RETRY_COMMAND: JournalRetrySettings,
    }
    model = models.get(command, Settings)
    try:
        return model(_env_file=env_file)
    except ValidationError as error:
        raise SettingsError(_problems_from(error)) from None


# `python -m agent watch` (agent/ops/watch.py): the re-dispatcher for self-hosted LiveKit.
WATCH_COMMAND = "watch"
WATCH_HINTS: dict[str, str] = {
    "WATCH_INTERVAL_SECONDS": "seconds between two looks at the rooms (default 5; >= 0.5, "
    "<= 300: each look lists every room through the LiveKit API)",
    "WATCH_GRACE_SECONDS": "seconds a room may lack its agent before a new dispatch "
    "(default 10; >= 1, <= 3600: a dispatched agent needs about a second to join)",
    "WATCH_MAX_REDISPATCH": "new dispatches per room at most (default 3; 0-100)",
}
HINTS.update(WATCH_HINTS)


class WatchSettings(BaseSettings):
    """`watch` talks to the LiveKit server API and nothing else: the LiveKit credentials and the
    agent name it re-dispatches are required, OpenAI and the backend are not read at all."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    livekit_url: str = Field(min_length=1, alias="LIVEKIT_URL")
    livekit_api_key: Text = Field(alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretText = Field(alias="LIVEKIT_API_SECRET")
    agent_name: AgentName = Field(alias="AGENT_NAME")
    # >= 0.5 s: each look lists every room, and the participants of each, through the LiveKit
    # server API; faster only loads that API (the grace window is seconds anyway)
    watch_interval_seconds: float = Field(
        default=5.0, ge=0.5, le=300, alias="WATCH_INTERVAL_SECONDS"
    )
    # >= 1 s: a dispatch's agent needs about a second to join; with no grace at all a room is
    # re-dispatched before its first agent could, and two agents answer one caller
    watch_grace_seconds: float = Field(default=10.0, ge=1, le=3600, alias="WATCH_GRACE_SECONDS")
    watch_max_redispatch: int = Field(default=3, ge=0, le=100, alias="WATCH_MAX_REDISPATCH")
    metrics_port: int | None = Field(default=None, ge=0, le=65535, alias="METRICS_PORT")
    # Railway injects PORT and its deploy-time healthcheck (railway.toml's `/`) calls it: the
    # watcher answers there like the worker's health server does; unset, it serves nothing.
    port: int | None = Field(default=None, ge=0, le=65535, alias="PORT")
    log_level: LogLevel = Field(default="INFO", alias="LOG_LEVEL")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("metrics_port", "port", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("livekit_url")
    @classmethod
    def _check_livekit_url(cls, value: str) -> str:
        return check_livekit_url(value)


def load_watch_settings(env_file: str | Path | None = ".env") -> WatchSettings:
    """Validate the watcher's environment once. Raises SettingsError naming every bad variable."""
    try:
        return WatchSettings(_env_file=env_file)
    except ValidationError as error:
        raise SettingsError(_problems_from(error), subject="the watcher") from None
