"""`python -m agent`: boot failures exit non-zero with a clear message, and the commands that
need no credentials work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_agent(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_start_with_empty_environment_names_each_missing_variable_and_exits_2() -> None:
    result = run_agent("start")
    assert result.returncode == 2
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "OPENAI_API_KEY"):
        assert name in result.stderr
    assert "AGENT_NAME" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_boot_failure_never_prints_a_secret_value() -> None:
    result = run_agent(
        "dev",
        env={"LIVEKIT_API_SECRET": "s3cr3t-value-123", "OPENAI_API_KEY": "sk-s3cr3t-456"},
    )
    assert result.returncode == 2
    assert "LIVEKIT_URL" in result.stderr
    assert "s3cr3t" not in result.stderr + result.stdout


def test_unreachable_livekit_exits_3_not_0(tmp_path: Path) -> None:
    env = {
        "AGENT_DATA_DIR": str(tmp_path),
        "LIVEKIT_URL": "ws://127.0.0.1:9",  # discard port: refused at once
        "LIVEKIT_API_KEY": "devkey",
        "LIVEKIT_API_SECRET": "secret_secret_secret_secret_secret_",
        "OPENAI_API_KEY": "sk-test",
        "AGENT_NAME": "test-agent",
        "LIVEKIT_MAX_RETRY": "0",
        "NUM_IDLE_PROCESSES": "0",
        "PORT": "0",
    }
    result = run_agent("start", env=env)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "failed to connect to livekit" in result.stderr


def test_a_backend_url_the_client_would_refuse_stops_boot_with_exit_2(tmp_path: Path) -> None:
    # Issue 10 section 5: it used to pass boot and fail every job before the caller heard a word.
    env = {
        "AGENT_DATA_DIR": str(tmp_path),
        "LIVEKIT_URL": "ws://127.0.0.1:9",  # never reached: boot must stop before connecting
        "LIVEKIT_API_KEY": "devkey",
        "LIVEKIT_API_SECRET": "secret_secret_secret_secret_secret_",
        "OPENAI_API_KEY": "sk-test",
        "AGENT_NAME": "test-agent",
        "LIVEKIT_MAX_RETRY": "0",
        "NUM_IDLE_PROCESSES": "0",
        "PORT": "0",
        "BACKEND_URL": "https://admin:hunter2@backend.example.com",
        "INTERNAL_SERVICE_KEY": "internal-service-key-0123456789",
    }
    result = run_agent("start", env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    named = [line for line in result.stderr.splitlines() if "BACKEND_URL" in line]
    assert len(named) == 1 and "credentials" in named[0]
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout


def test_help_and_console_help_work_without_credentials() -> None:
    assert run_agent("--help").returncode == 0
    result = run_agent("console", "--help")
    assert result.returncode == 0 and "console" in result.stdout


def test_download_files_works_without_credentials() -> None:
    result = run_agent("download-files")
    assert result.returncode == 0, result.stderr[-2000:]


def test_schema_prints_one_document_with_named_definitions() -> None:
    result = run_agent("schema")
    assert result.returncode == 0
    document = json.loads(result.stdout)
    assert {"JobMetadata", "TranscriptPayload", "TurnMessage", "Session"} <= set(document["$defs"])
