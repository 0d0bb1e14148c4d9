"""How a bad or missing variable is reported: the hint for each, and `SettingsError`.

Rule: a validation failure is reported by variable name, never by value, next to how to fix it
(`HINTS`, the watcher's included), all of them at once; whoever cannot start (the worker, or
`watch`'s watcher) says so in the first line.
"""

from __future__ import annotations

from pydantic import ValidationError

from agent.config.settings import MIN_JOB_MEMORY_LIMIT_MB

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
    "INPUT_FRAME_MS": "the length of the caller's audio frames in ms, 10-200 (default 50)",
    "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS": "milliseconds a blocked event loop is reported "
    "after, 0-60000 (0: the monitor off, as under start; 100: the library's default)",
}

# `python -m agent watch`'s own variables (agent.config.watch): one table answers both
WATCH_HINTS: dict[str, str] = {
    "WATCH_INTERVAL_SECONDS": "seconds between two looks at the rooms (default 5; >= 0.5, "
    "<= 300: each look lists every room through the LiveKit API)",
    "WATCH_GRACE_SECONDS": "seconds a room may lack its agent before a new dispatch "
    "(default 10; >= 1, <= 3600: a dispatched agent needs about a second to join)",
    "WATCH_MAX_REDISPATCH": "new dispatches per room at most (default 3; 0-100)",
}
HINTS.update(WATCH_HINTS)


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


def problems_from(error: ValidationError) -> dict[str, str]:
    """Each variable `error` names, mapped to what is wrong with it and its hint."""
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
