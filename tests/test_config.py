"""Settings: every rule of the design's Configuration section."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import Settings, SettingsError, WatchSettings, load_settings, load_watch_settings

REQUIRED = {
    "LIVEKIT_URL": "wss://example.livekit.cloud",
    "LIVEKIT_API_KEY": "APIkey",
    "LIVEKIT_API_SECRET": "very-secret-livekit-value",
    "OPENAI_API_KEY": "sk-very-secret-openai-value",
}
ALL_VARS = [
    *REQUIRED,
    "AGENT_NAME",
    "OPENAI_BASE_URL",
    "BACKEND_URL",
    "INTERNAL_SERVICE_KEY",
    "DRAIN_TIMEOUT",
    "MAX_CALL_SECONDS",
    "PORT",
    "LOG_LEVEL",
    "NUM_IDLE_PROCESSES",
    "LIVEKIT_RECORDING",
    "LLM_MODEL",
    "STT_MODEL",
    "TTS_MODEL",
    "TTS_VOICE",
    "LANGUAGE",
    "AGENT_DATA_DIR",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "LLM_TIMEOUT",
    "BACKEND_TIMEOUT",
    "INITIALIZE_PROCESS_TIMEOUT",
    "LOAD_THRESHOLD",
    "JOB_MEMORY_LIMIT_MB",
    "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS",
    "WATCH_INTERVAL_SECONDS",
    "WATCH_GRACE_SECONDS",
    "WATCH_MAX_REDISPATCH",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ALL_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in {**REQUIRED, **values}.items():
        monkeypatch.setenv(name, value)


def test_defaults_follow_the_design(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch)
    settings = load_settings("dev")
    assert settings.port == 8081
    assert settings.max_call_seconds == 1800
    assert settings.no_show_seconds == 60
    assert settings.delivery_deadline == 30
    assert settings.effective_drain_timeout == 1800 + 60
    assert settings.session_end_timeout == 40
    assert settings.job_memory_limit_mb == 1500
    assert settings.livekit_recording is False
    assert settings.has_backend is False


def test_missing_variables_are_all_named_in_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings("dev")
    assert set(caught.value.problems) == set(REQUIRED)
    assert "LIVEKIT_URL" in caught.value.render()


def test_agent_name_is_required_for_start_only(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch)
    assert load_settings("dev").agent_name is None
    with pytest.raises(SettingsError) as caught:
        load_settings("start")
    assert list(caught.value.problems) == ["AGENT_NAME"]


def test_the_library_loop_monitor_is_off_under_start_and_on_under_dev_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the monitor wakes every 20 ms in every process: a fifth of a deployed call's CPU
    # (docs/performance.md); production does without it unless an operator asks
    variable = "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS"
    set_env(monkeypatch, AGENT_NAME="roleplay-agent")
    assert load_settings("start").library_environment == {variable: "0"}
    assert load_settings("dev").library_environment == {variable: "100"}  # the library's
    set_env(monkeypatch, AGENT_NAME="roleplay-agent", **{variable: "250"})
    assert load_settings("start").library_environment == {variable: "250"}
    assert load_settings("dev").library_environment == {variable: "250"}
    set_env(monkeypatch, **{variable: "0"})
    assert load_settings("dev").library_environment == {variable: "0"}


@pytest.mark.parametrize("value", ["-1", "soon", "60001"])
def test_a_bad_loop_block_threshold_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # the library would only warn and fall back to 100 ms, monitoring after all
    set_env(monkeypatch, AGENT_NAME="roleplay-agent", LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS=value)
    for command in ("start", "dev"):
        with pytest.raises(SettingsError) as caught:
            load_settings(command)
        assert list(caught.value.problems) == ["LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS"]
        assert "0: the monitor off" in caught.value.render()


def test_backend_url_and_key_go_together(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, BACKEND_URL="https://backend.example.com")
    with pytest.raises(SettingsError) as caught:
        load_settings("dev")
    assert "INTERNAL_SERVICE_KEY" in caught.value.problems


def test_backend_url_must_be_https_except_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, BACKEND_URL="http://backend.example.com", INTERNAL_SERVICE_KEY="k" * 20)
    with pytest.raises(SettingsError) as caught:
        load_settings("dev")
    assert "BACKEND_URL" in caught.value.problems
    monkeypatch.setenv("BACKEND_URL", "http://127.0.0.1:3000/")
    assert load_settings("dev").backend_url == "http://127.0.0.1:3000"


def test_invalid_values_name_the_variable_without_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_env(monkeypatch, PORT="not-a-port", LIVEKIT_URL="ftp://very-secret-livekit-value")
    with pytest.raises(SettingsError) as caught:
        load_settings("dev")
    rendered = caught.value.render()
    assert {"PORT", "LIVEKIT_URL"} <= set(caught.value.problems)
    assert "very-secret" not in rendered


def test_secrets_never_appear_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch)
    settings = load_settings("dev")
    assert "very-secret" not in repr(settings)
    assert "very-secret" not in str(settings.model_dump())


def test_drain_timeout_shorter_than_a_call_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, DRAIN_TIMEOUT="60", AGENT_NAME="agent")
    with pytest.raises(SettingsError) as caught:
        load_settings("start")
    assert "DRAIN_TIMEOUT" in caught.value.problems


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lines = [f"{name}={value}" for name, value in REQUIRED.items()]
    (tmp_path / ".env").write_text("\n".join([*lines, "PORT=9000"]) + "\n")
    settings = load_settings("dev")
    assert settings.port == 9000


def test_empty_optional_values_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, BACKEND_URL="", INTERNAL_SERVICE_KEY="", NUM_IDLE_PROCESSES="")
    settings = load_settings("dev")
    assert settings.backend_url is None and settings.num_idle_processes is None


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, LOG_LEVEL="debug")
    assert load_settings("dev").log_level == "DEBUG"


def test_settings_are_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch)
    settings: Settings = load_settings("dev")
    with pytest.raises(ValueError):
        settings.port = 1  # type: ignore[misc]


def test_readme_table_lists_exactly_the_settings() -> None:
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", table, flags=re.MULTILINE))
    aliases = {
        field.alias for model in (Settings, WatchSettings) for field in model.model_fields.values()
    }
    assert documented == aliases


def test_env_example_names_only_real_settings() -> None:
    import re

    example = (Path(__file__).resolve().parent.parent / ".env.example").read_text()
    named = set(re.findall(r"^#? ?([A-Z_]+)=", example, flags=re.MULTILINE))
    aliases = {
        field.alias for model in (Settings, WatchSettings) for field in model.model_fields.values()
    }
    assert named <= aliases


def test_openai_base_url_must_be_https_except_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, OPENAI_BASE_URL="http://api.example.com/v1")
    with pytest.raises(SettingsError) as caught:
        load_settings("dev")
    assert "OPENAI_BASE_URL" in caught.value.problems
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    assert load_settings("dev").openai_base_url == "http://127.0.0.1:8000/v1"


def test_an_unusable_data_dir_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from agent.config import check_data_dir

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the directory should be")
    set_env(monkeypatch, AGENT_DATA_DIR=str(blocker))
    with pytest.raises(SettingsError) as caught:
        check_data_dir(load_settings("dev"))
    assert list(caught.value.problems) == ["AGENT_DATA_DIR"]


# --------------------------------------------------------------------------- one URL/key rule
# Issue 10, section 5: every form the HTTP client would refuse (or that would leak the key) must
# be refused at boot by Settings AND by HttpBackend's constructor, with a message naming the
# variable and the problem. Expected words are written from DESIGN.md ("plain http only to a
# literal loopback host: localhost, 127.0.0.0/8, ::1"), not taken from the code under test.

BACKEND_KEY = "internal-service-key-0123456789"
GOOD_BACKEND_URLS = [
    "https://api.example.com",
    "http://127.0.0.1:8080/base",
    "http://[::1]:9000",
    "http://localhost:3000",
    "http://127.8.9.10:3000",
]
# (url, a word the refusal must contain)
BAD_BACKEND_URLS = [
    ("https://user:pw@backend.example.com", "credentials"),
    ("https://backend.example.com/api?token=1", "query"),
    ("https://backend.example.com/api#part", "fragment"),
    ("https://backend.example.com\\evil.example.com", "backslash"),
    ("https://backend.example.com/a\\b", "backslash"),
    ("http://foo.localhost:3000", "loopback"),
    ("http://localhost.example.com", "loopback"),
    ("http://backend.example.com", "loopback"),
    ("https://", "host"),
    ("https://backend.example.com\n", "whitespace"),
    ("https://backend .example.com", "whitespace"),
    ("ftp://backend.example.com", "https"),
]
# (key, a word the refusal must contain)
BAD_KEYS = [
    (BACKEND_KEY + "\n", "whitespace"),
    ("  " + BACKEND_KEY, "whitespace"),
    ("kéy-" + BACKEND_KEY, "ascii"),
    ("key\r\nX-Injected: 1", "ascii"),
]


@pytest.mark.parametrize(("url", "word"), BAD_BACKEND_URLS)
def test_a_bad_backend_url_is_refused_by_settings_and_by_the_client(
    monkeypatch: pytest.MonkeyPatch, url: str, word: str
) -> None:
    from pydantic import SecretStr

    from agent.backend import HttpBackend

    set_env(monkeypatch, BACKEND_URL=url, INTERNAL_SERVICE_KEY=BACKEND_KEY)
    with pytest.raises(SettingsError) as caught:
        load_settings("dev")
    assert list(caught.value.problems) == ["BACKEND_URL"]
    assert word in caught.value.problems["BACKEND_URL"].lower()
    assert "pw@" not in caught.value.render()

    with pytest.raises(ValueError) as refused:
        HttpBackend(url, SecretStr(BACKEND_KEY))
    assert "BACKEND_URL" in str(refused.value)
    assert word in str(refused.value).lower()
    assert BACKEND_KEY not in str(refused.value)


@pytest.mark.parametrize(("key", "word"), BAD_KEYS)
def test_a_bad_service_key_is_refused_by_settings_and_by_the_client(
    monkeypatch: pytest.MonkeyPatch, key: str, word: str
) -> None:
    from pydantic import SecretStr

    from agent.backend import HttpBackend

    set_env(monkeypatch, BACKEND_URL="https://api.example.com", INTERNAL_SERVICE_KEY=key)
    with pytest.raises(SettingsError) as caught:
        load_settings("dev")
    assert list(caught.value.problems) == ["INTERNAL_SERVICE_KEY"]
    assert word in caught.value.problems["INTERNAL_SERVICE_KEY"].lower()
    assert BACKEND_KEY not in caught.value.render()

    with pytest.raises(ValueError) as refused:
        HttpBackend("https://api.example.com", SecretStr(key))
    assert "INTERNAL_SERVICE_KEY" in str(refused.value)
    assert word in str(refused.value).lower()
    assert BACKEND_KEY not in str(refused.value)


@pytest.mark.parametrize("url", GOOD_BACKEND_URLS)
async def test_good_backend_urls_pass_settings_and_the_client(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    from pydantic import SecretStr

    from agent.backend import HttpBackend

    set_env(monkeypatch, BACKEND_URL=url + "/", INTERNAL_SERVICE_KEY=BACKEND_KEY)
    assert load_settings("dev").backend_url == url  # one trailing slash dropped
    await HttpBackend(url, SecretStr(BACKEND_KEY)).aclose()


@pytest.mark.parametrize(
    ("url", "word"),
    [
        ("wss://", "host"),
        ("wss:///path", "host"),
        ("wss://user:pw@x.livekit.cloud", "credentials"),
        ("wss://x.livekit.cloud?region=eu", "query"),
        ("wss://x.livekit.cloud\\", "backslash"),
        ("wss://x.livekit.cloud\n", "whitespace"),
    ],
)
def test_a_bad_livekit_url_is_refused(monkeypatch: pytest.MonkeyPatch, url: str, word: str) -> None:
    set_env(monkeypatch, LIVEKIT_URL=url)
    with pytest.raises(SettingsError) as caught:
        load_settings("dev")
    assert list(caught.value.problems) == ["LIVEKIT_URL"]
    assert word in caught.value.problems["LIVEKIT_URL"].lower()


@pytest.mark.parametrize(
    ("url", "word"),
    [
        ("http://foo.localhost:8000/v1", "loopback"),
        ("https://user:pw@api.example.com/v1", "credentials"),
        ("https://api.example.com/v1?x=1", "query"),
        ("https://api.example.com\\v1", "backslash"),
        ("https:///v1", "host"),
    ],
)
def test_a_bad_openai_base_url_is_refused(
    monkeypatch: pytest.MonkeyPatch, url: str, word: str
) -> None:
    set_env(monkeypatch, OPENAI_BASE_URL=url)
    with pytest.raises(SettingsError) as caught:
        load_settings("dev")
    assert list(caught.value.problems) == ["OPENAI_BASE_URL"]
    assert word in caught.value.problems["OPENAI_BASE_URL"].lower()


def test_an_openai_key_with_a_trailing_newline_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, OPENAI_API_KEY="sk-very-secret-openai-value\n")
    with pytest.raises(SettingsError) as caught:
        load_settings("dev")
    assert list(caught.value.problems) == ["OPENAI_API_KEY"]
    assert "very-secret" not in caught.value.render()


def test_checkpoint_seconds_defaults_to_5_and_0_turns_them_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CHECKPOINT_SECONDS", raising=False)
    set_env(monkeypatch)
    assert load_settings("dev").checkpoint_seconds == 5
    set_env(monkeypatch, CHECKPOINT_SECONDS="0")
    assert load_settings("dev").checkpoint_seconds == 0
    set_env(monkeypatch, CHECKPOINT_SECONDS="2.5")
    assert load_settings("dev").checkpoint_seconds == 2.5


@pytest.mark.parametrize("value", ["-1", "301", "soon"])
def test_a_bad_checkpoint_seconds_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    set_env(monkeypatch, CHECKPOINT_SECONDS=value)
    with pytest.raises(SettingsError) as caught:
        load_settings("dev")
    assert list(caught.value.problems) == ["CHECKPOINT_SECONDS"]


# --------------------------------------------------------------------------- one text rule
# Issue 20 item 8: a blank, whitespace-padded or newline-ended key, secret, name or model passed
# boot (an empty LIVEKIT_API_SECRET ended in a library traceback, a `\n` in a 401 loop and exit
# 3). DESIGN.md "Configuration": an invalid setting stops the worker at boot naming it, no
# secret. Every text setting follows one rule, so each is checked with the same bad forms.

# (variable, a good value); each good value holds "s3cr3t" so a leak of it is visible
TEXT_SETTINGS = [
    ("LIVEKIT_API_KEY", "APIs3cr3tkey"),
    ("LIVEKIT_API_SECRET", "livekit-s3cr3t-value"),
    ("OPENAI_API_KEY", "sk-s3cr3t-openai"),
    ("AGENT_NAME", "s3cr3t-agent"),
    ("LLM_MODEL", "s3cr3t-llm"),
    ("STT_MODEL", "s3cr3t-stt"),
    ("TTS_MODEL", "s3cr3t-tts"),
    ("TTS_VOICE", "s3cr3t-voice"),
    ("LANGUAGE", "s3cr3t"),
    ("AGENT_DATA_DIR", "/tmp/s3cr3t-data"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/s3cr3t"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/s3cr3t"),
]
# how a secret manager, a quoted `.env` value or a copy-paste pads a value
PADDINGS = ["{}\n", "{}\r\n", " {}", "{} ", "\t{}"]
# the empty string means "unset" for these optional settings (the default applies)
EMPTY_IS_UNSET = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"}


def refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> str:
    """Boot `start` with one bad variable; return the rendered error, checking it names only
    that variable and never shows the value."""
    set_env(monkeypatch, **{"AGENT_NAME": "agent", name: value})
    with pytest.raises(SettingsError) as caught:
        load_settings("start")
    assert list(caught.value.problems) == [name]
    rendered = caught.value.render()
    assert "s3cr3t" not in rendered
    return caught.value.problems[name]


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize(("name", "good"), TEXT_SETTINGS)
def test_a_text_setting_with_surrounding_whitespace_is_refused_not_stripped(
    monkeypatch: pytest.MonkeyPatch, name: str, good: str, padding: str
) -> None:
    problem = refused(monkeypatch, name, padding.format(good))
    assert "remove the trailing newline/whitespace" in problem


@pytest.mark.parametrize("blank", [" ", "   ", "\n", "\t"])
@pytest.mark.parametrize(("name", "good"), TEXT_SETTINGS)
def test_a_blank_text_setting_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, good: str, blank: str
) -> None:
    assert "empty" in refused(monkeypatch, name, blank)


@pytest.mark.parametrize(("name", "good"), [s for s in TEXT_SETTINGS if s[0] not in EMPTY_IS_UNSET])
def test_an_empty_text_setting_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, good: str
) -> None:
    problem = refused(monkeypatch, name, "")
    assert "empty" in problem or "missing" in problem or "at least" in problem


@pytest.mark.parametrize("inside", ["\n", "\r", "\t", "\x1b", "\x7f", "\u2028"])
@pytest.mark.parametrize(("name", "good"), TEXT_SETTINGS)
def test_a_text_setting_with_a_line_break_or_control_character_inside_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, good: str, inside: str
) -> None:
    refused(monkeypatch, name, good[:3] + inside + good[3:])


def test_good_text_settings_pass_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        AGENT_NAME="roleplay-agent.eu_1",
        LLM_MODEL="org/model-3.5:latest",
        TTS_VOICE="ash",
        LANGUAGE="pt-BR",
        AGENT_DATA_DIR="/var/lib/voice agent/data",
        OTEL_EXPORTER_OTLP_ENDPOINT="",
    )
    settings = load_settings("start")
    assert settings.agent_name == "roleplay-agent.eu_1"
    assert settings.llm_model == "org/model-3.5:latest"
    assert settings.language == "pt-BR"
    assert settings.agent_data_dir == Path("/var/lib/voice agent/data")
    assert settings.otlp_endpoint is None


def test_an_empty_agent_name_still_means_the_default_outside_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_env(monkeypatch, AGENT_NAME="")
    assert load_settings("dev").agent_name_or_default == "roleplay-agent-dev"
    set_env(monkeypatch, AGENT_NAME=" ")
    with pytest.raises(SettingsError) as caught:
        load_settings("dev")
    assert list(caught.value.problems) == ["AGENT_NAME"]


@pytest.mark.parametrize("command", ["dev", "start"])
def test_an_agent_name_longer_than_128_characters_is_refused(
    monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    set_env(monkeypatch, AGENT_NAME="a" * 129)
    with pytest.raises(SettingsError) as caught:
        load_settings(command)
    assert list(caught.value.problems) == ["AGENT_NAME"]
    assert "128 characters" in caught.value.problems["AGENT_NAME"]


def test_a_quoted_newline_in_dotenv_is_refused_without_showing_the_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # the common cause: a value pasted with its line break, kept by the double quotes
    lines = [f"{name}={value}" for name, value in REQUIRED.items() if name != "LIVEKIT_API_SECRET"]
    lines.append('LIVEKIT_API_SECRET="livekit-s3cr3t-value\\n"')
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    with pytest.raises(SettingsError) as caught:
        load_settings("dev")
    assert list(caught.value.problems) == ["LIVEKIT_API_SECRET"]
    assert "newline" in caught.value.problems["LIVEKIT_API_SECRET"]
    assert "s3cr3t" not in caught.value.render()


def test_every_bad_text_setting_is_named_in_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = {name: good + "\n" for name, good in TEXT_SETTINGS}
    set_env(monkeypatch, **bad)
    with pytest.raises(SettingsError) as caught:
        load_settings("start")
    assert set(caught.value.problems) == set(bad)
    assert "s3cr3t" not in caught.value.render()


WATCH_REQUIRED = {
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LIVEKIT_API_KEY": "APIs3cr3tkey",
    "LIVEKIT_API_SECRET": "livekit-s3cr3t-value",
    "AGENT_NAME": "agent",
}


@pytest.mark.parametrize("name", ["LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "AGENT_NAME"])
@pytest.mark.parametrize("form", ["", " ", "{}\n", " {}"])
def test_the_watcher_refuses_the_same_bad_text_settings(
    monkeypatch: pytest.MonkeyPatch, name: str, form: str
) -> None:
    for key, value in {**WATCH_REQUIRED, name: form.format(WATCH_REQUIRED[name])}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as caught:
        load_watch_settings()
    assert list(caught.value.problems) == [name]
    assert "s3cr3t" not in caught.value.render()


# --------------------------------------------------------------------------- absurd numbers
# (variable, refused values, the smallest accepted value)
NUMBER_FLOORS = [
    # the watcher lists every room (and their participants) through the LiveKit API each tick
    ("WATCH_INTERVAL_SECONDS", ["1e-6", "0.1", "0.49"], "0.5"),
    # no grace: a room is re-dispatched before its first agent could join, two agents answer
    ("WATCH_GRACE_SECONDS", ["0", "1e-6", "0.9"], "1"),
]
WORKER_FLOORS = [
    # below a round trip every request fails
    ("LLM_TIMEOUT", ["1e-6", "0.5"], "1"),
    ("BACKEND_TIMEOUT", ["1e-6", "0.5"], "1"),
    # no job process finishes prewarm (the VAD alone takes longer)
    ("INITIALIZE_PROCESS_TIMEOUT", ["1e-6", "0.5"], "1"),
    # the worker's load is never that low: it would refuse every job
    ("LOAD_THRESHOLD", ["1e-6", "0.05"], "0.1"),
    # an idle job process is 75-125 MB PSS (docs/performance.md): every call would be killed
    ("JOB_MEMORY_LIMIT_MB", ["1e-6", "1", "199"], "200"),
]


@pytest.mark.parametrize(("name", "bad", "floor"), NUMBER_FLOORS)
def test_an_absurdly_small_watch_setting_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str, bad: list[str], floor: str
) -> None:
    for key, value in WATCH_REQUIRED.items():
        monkeypatch.setenv(key, value)
    for value in bad:
        monkeypatch.setenv(name, value)
        with pytest.raises(SettingsError) as caught:
            load_watch_settings()
        assert list(caught.value.problems) == [name], value
    monkeypatch.setenv(name, floor)
    assert load_watch_settings() is not None


@pytest.mark.parametrize(("name", "bad", "floor"), WORKER_FLOORS)
def test_an_absurdly_small_worker_setting_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str, bad: list[str], floor: str
) -> None:
    for value in bad:
        set_env(monkeypatch, **{name: value})
        with pytest.raises(SettingsError) as caught:
            load_settings("dev")
        assert list(caught.value.problems) == [name], value
    set_env(monkeypatch, **{name: floor})
    assert load_settings("dev") is not None


def test_a_job_memory_limit_of_0_still_turns_the_limit_off(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, JOB_MEMORY_LIMIT_MB="0")
    assert load_settings("dev").job_memory_limit_mb == 0
