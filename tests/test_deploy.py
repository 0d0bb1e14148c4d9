"""Deploy artefacts (Dockerfile, docker-entrypoint.sh, .dockerignore, railway.toml) agree with each
other and with the code: the start command, the health port and path, the user, the drain
arithmetic of the design, and a locked non-dev install that runs the worker's CLI.

There is no Docker engine here: the Dockerfile is checked by parsing it, the entrypoint by running
it with sh, and the image's dependency set by installing the locked non-dev set into a fresh venv.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from agent.config import RUN_COMMANDS, Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "docker-entrypoint.sh"
DOCKERIGNORE = ROOT / ".dockerignore"
RAILWAY_TOML = ROOT / "railway.toml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

REQUIRED_VARS = {
    "LIVEKIT_URL": "wss://example.livekit.cloud",
    "LIVEKIT_API_KEY": "APIkey",
    "LIVEKIT_API_SECRET": "very-secret-livekit-value",
    "OPENAI_API_KEY": "sk-very-secret-openai-value",
}

# The design's drain arithmetic: drainingSeconds >= DRAIN_TIMEOUT + ENTRYPOINT_GRACE +
# SESSION_ACLOSE + session_end_timeout + shutdown_process_timeout + MARGIN. The two library
# bounds are read from livekit-agents below, so an upgrade that changes them fails here.
ENTRYPOINT_GRACE = 15
SESSION_ACLOSE = 60
MARGIN = 30

# Railway's config-as-code reference (shared/notes/deploy-and-lifecycle-facts.md §5.1): every
# documented key and the type its value must have. Numbers must be TOML integers, not strings.
STR = (str,)
BUILD_KEYS: dict[str, tuple[type, ...]] = {
    "builder": STR,
    "watchPatterns": (list,),
    "buildCommand": STR,
    "dockerfilePath": STR,
    "railpackVersion": STR,
}
DEPLOY_KEYS: dict[str, tuple[type, ...]] = {
    "startCommand": STR,
    "preDeployCommand": (list,),
    "multiRegionConfig": (dict,),
    "healthcheckPath": STR,
    "healthcheckTimeout": (int,),
    "restartPolicyType": STR,
    "restartPolicyMaxRetries": (int,),
    "cronSchedule": STR,
    "overlapSeconds": (int,),
    "drainingSeconds": (int,),
}
TOP_LEVEL_KEYS = {"build", "deploy", "environments"}


# ---- helpers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    stage: int  # -1 for the global ARGs before the first FROM
    keyword: str
    args: str


@cache
def dockerfile() -> tuple[Instruction, ...]:
    """Logical Dockerfile instructions: continuations joined, comment lines dropped."""
    logical: list[str] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append((current + line).strip())
        current = ""
    assert not current, "the Dockerfile ends inside a line continuation"
    stage = -1
    out: list[Instruction] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        out.append(Instruction(stage, keyword.upper(), args.strip()))
    return tuple(out)


def stages() -> int:
    return max(item.stage for item in dockerfile()) + 1


def runtime(keyword: str) -> list[str]:
    """The arguments of every `keyword` instruction of the final (runtime) stage."""
    last = stages() - 1
    return [item.args for item in dockerfile() if item.stage == last and item.keyword == keyword]


def in_stage(stage: int, keyword: str) -> list[str]:
    return [item.args for item in dockerfile() if item.stage == stage and item.keyword == keyword]


def env_of(stage: int) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in in_stage(stage, "ENV"):
        for token in shlex.split(args):
            name, sep, value = token.partition("=")
            assert sep, f"ENV without key=value form: {args!r}"
            env[name] = value
    return env


def exec_form(args: str) -> list[str]:
    value = json.loads(args)  # exec (JSON) form only: a shell form would wrap python in sh -c
    assert isinstance(value, list) and all(isinstance(part, str) for part in value)
    return [str(part) for part in value]


def global_args() -> dict[str, str]:
    out: dict[str, str] = {}
    for args in in_stage(-1, "ARG"):
        name, _, default = args.partition("=")
        out[name] = default
    return out


def copy_sources(args: str) -> list[str]:
    """Context paths of a COPY (none when it copies from another stage or image)."""
    parts = args.split()
    if any(part.startswith("--from=") for part in parts):
        return []
    paths = [part for part in parts if not part.startswith("--")]
    return paths[:-1]


@cache
def railway() -> dict[str, Any]:
    with RAILWAY_TOML.open("rb") as handle:
        return tomllib.load(handle)


def deploy() -> dict[str, Any]:
    section = railway()["deploy"]
    assert isinstance(section, dict)
    return section


@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with only the required variables set: everything else at its default."""
    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)
    return Settings(
        LIVEKIT_URL=REQUIRED_VARS["LIVEKIT_URL"],
        LIVEKIT_API_KEY=REQUIRED_VARS["LIVEKIT_API_KEY"],
        LIVEKIT_API_SECRET=REQUIRED_VARS["LIVEKIT_API_SECRET"],
        OPENAI_API_KEY=REQUIRED_VARS["OPENAI_API_KEY"],
        _env_file=None,
    )


def dockerignore_patterns() -> Iterator[tuple[bool, re.Pattern[str]]]:
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex += pattern[i : end + 1]
                i = end + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        yield negate, re.compile(regex)


def dockerignored(path: str) -> bool:
    """Docker's rule, simplified: the last matching pattern wins, and a pattern that matches a
    parent directory matches everything under it."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in dockerignore_patterns():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def watched(path: str) -> bool:
    patterns = railway()["build"].get("watchPatterns")
    if patterns is None:
        return True  # no watch patterns: every change deploys
    for pattern in patterns:
        prefix = pattern.strip("/").removesuffix("/**")
        if path.strip("/") == prefix or path.strip("/").startswith(prefix + "/"):
            return True
    return False


# ---- railway.toml --------------------------------------------------------------------------------


def test_railway_toml_uses_only_documented_keys_with_the_right_types() -> None:
    config = railway()
    assert set(config) <= TOP_LEVEL_KEYS, (
        f"undocumented top-level keys: {set(config) - TOP_LEVEL_KEYS}"
    )
    for section, documented in (("build", BUILD_KEYS), ("deploy", DEPLOY_KEYS)):
        values = config[section]
        assert isinstance(values, dict)
        unknown = set(values) - set(documented)
        assert not unknown, f"undocumented [{section}] keys: {unknown}"
        for key, value in values.items():
            # bool is an int subclass: a number means an int and nothing else
            ok = type(value) in documented[key]
            assert ok, f"[{section}] {key} = {value!r} must be {documented[key]}"
    assert all(isinstance(glob, str) for glob in config["build"].get("watchPatterns", []))


def test_railway_builds_this_dockerfile_and_checks_health_and_restarts_on_failure() -> None:
    build = railway()["build"]
    assert build["builder"] == "DOCKERFILE"
    assert (ROOT / build["dockerfilePath"]).resolve() == DOCKERFILE
    settings = deploy()
    assert settings["healthcheckPath"] == "/"
    assert 0 < settings["healthcheckTimeout"] <= 300
    assert settings["restartPolicyType"] == "ON_FAILURE"
    assert settings["restartPolicyMaxRetries"] > 0


def test_the_healthcheck_timeout_leaves_a_healthy_worker_time_to_register(
    defaults: Settings,
) -> None:
    # GET / is 503 until the worker registers (tests/test_health.py). Before it dials LiveKit the
    # library waits for the idle job processes, at most INITIALIZE_PROCESS_TIMEOUT + a slack.
    from livekit.agents.ipc import proc_pool

    source = Path(proc_pool.__file__).read_text()
    slack = re.search(r"timeout=self\._initialize_timeout \+ (\d+(?:\.\d+)?),", source)
    assert slack is not None, "re-read proc_pool.start: the wait for idle processes moved"
    boot = 60  # image start, imports, prewarm of the main process, the dial itself
    needed = defaults.initialize_process_timeout + float(slack.group(1)) + boot
    assert deploy()["healthcheckTimeout"] >= needed


def test_draining_seconds_cover_the_worker_drain_with_the_defaults(defaults: Settings) -> None:
    required = (
        defaults.effective_drain_timeout
        + ENTRYPOINT_GRACE
        + SESSION_ACLOSE
        + defaults.session_end_timeout
        + defaults.shutdown_process_timeout
        + MARGIN
    )
    draining = deploy()["drainingSeconds"]
    assert type(draining) is int, "drainingSeconds must be a TOML integer (Railway rejects strings)"
    assert draining >= required, f"drainingSeconds {draining} < {required} needed by the drain"


def test_the_drain_terms_are_the_ones_the_worker_and_the_library_use(defaults: Settings) -> None:
    from livekit.agents.ipc import job_proc_lazy_main

    from agent.worker import build_server

    server = build_server(defaults)
    assert server._drain_timeout == defaults.effective_drain_timeout
    assert server._session_end_timeout == defaults.session_end_timeout
    assert server._shutdown_process_timeout == defaults.shutdown_process_timeout
    # the library's own bounds between the drain timeout and the process kill
    assert job_proc_lazy_main._SESSION_ACLOSE_TIMEOUT <= SESSION_ACLOSE
    source = Path(job_proc_lazy_main.__file__).read_text()
    grace = re.search(r"shield\(job_entry_task\), timeout=(\d+(?:\.\d+)?)\)", source)
    assert grace is not None, "re-read job_proc_lazy_main: the entrypoint grace moved"
    assert float(grace.group(1)) <= ENTRYPOINT_GRACE


def test_the_health_server_follows_port(
    defaults: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.worker import build_server

    for name, value in REQUIRED_VARS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PORT", "18081")  # Railway injects PORT and its healthcheck calls it
    settings = Settings(_env_file=None)
    assert settings.port == 18081
    assert build_server(settings)._port == 18081


# ---- Dockerfile ----------------------------------------------------------------------------------


def test_exactly_one_start_command() -> None:
    places = int("startCommand" in deploy()) + int(bool(runtime("CMD")))
    assert places == 1, "the start command must live in railway.toml or in the image, not both"


def test_the_image_runs_the_venv_python_directly_as_pid_1() -> None:
    (workdir,) = runtime("WORKDIR")[-1:]
    (cmd,) = [exec_form(args) for args in runtime("CMD")]
    assert cmd == [f"{workdir}/.venv/bin/python", "-m", "agent", "start"]
    assert cmd[-1] in RUN_COMMANDS
    assert (ROOT / "agent" / "__main__.py").is_file()
    (entrypoint,) = [exec_form(args) for args in runtime("ENTRYPOINT")]
    assert entrypoint == [f"{workdir}/{ENTRYPOINT.name}"]
    # the entrypoint only ever execs: no `uv run`, no child process between SIGTERM and python
    code = [line.strip() for line in ENTRYPOINT.read_text().splitlines()]
    runs = [line for line in code if '"$@"' in line and not line.startswith("#")]
    assert runs and all(line.startswith("exec ") for line in runs)
    assert not any(re.search(r"\buv\b", line) for line in code if not line.startswith("#"))


def test_the_health_port_matches_the_worker_default(defaults: Settings) -> None:
    assert runtime("EXPOSE") == [str(defaults.port)]
    assert deploy()["healthcheckPath"] == "/"
    from livekit.agents import worker

    # livekit-agents serves the health check at GET / on the server's port
    assert 'web.get("/", health_check)' in Path(worker.__file__).read_text()


def test_the_image_runs_as_the_non_root_app_user() -> None:
    users = runtime("USER")
    assert users, "the runtime stage must set a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    created = " ".join(runtime("RUN"))
    assert re.search(rf"useradd\b.*--uid {user}\b.*\bapp\b", created)
    assert env_of(stages() - 1)["HOME"] == "/home/app"
    script = ENTRYPOINT.read_text()
    assert "exec setpriv --reuid=" in script and "AGENT_RUN_AS:-app" in script


def test_the_image_is_built_from_the_lock_without_dev_packages() -> None:
    images = global_args()
    assert images["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"  # bookworm: setpriv is Essential
    froms = [item.args.split()[0] for item in dockerfile() if item.keyword == "FROM"]
    uv_images = [image for image in froms if image.startswith("ghcr.io/astral-sh/uv")]
    assert len(uv_images) == 1 and re.fullmatch(
        r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", uv_images[0]
    )
    assert froms.count("${PYTHON_IMAGE}") == 2  # build and runtime: the same interpreter path
    syncs = [item for item in dockerfile() if item.keyword == "RUN" and "uv sync" in item.args]
    assert len(syncs) == 1
    flags = syncs[0].args.split()
    assert {"--locked", "--no-dev", "--no-install-project"} <= set(flags)
    assert env_of(syncs[0].stage)["UV_COMPILE_BYTECODE"] == "1"
    assert env_of(syncs[0].stage)["UV_PYTHON_DOWNLOADS"] == "never"


def test_the_runtime_environment() -> None:
    env = env_of(stages() - 1)
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["AGENT_DATA_DIR"] == "/data"
    assert env["PATH"].startswith("/app/.venv/bin:")
    assert "PORT" not in env  # the worker follows Railway's PORT; unset it defaults to 8081
    # the import check runs as the runtime user and leaves nothing behind in the image (its
    # onnxruntime device id would be every container's)
    (check,) = [args for args in runtime("RUN") if "download-files" in args]
    assert check.startswith("python -m agent download-files && ")
    assert 'rm -rf "$HOME/.cache"' in check


def test_the_image_copies_the_source_and_prompts_and_nothing_ignored() -> None:
    sources = [src for item in dockerfile() if item.keyword in {"COPY", "ADD"}
               for src in copy_sources(item.args)]  # fmt: skip
    assert {"agent/", "prompts/", "pyproject.toml", "uv.lock", ENTRYPOINT.name} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such path"
        assert not dockerignored(src.strip("/")), f"COPY {src}: excluded by .dockerignore"
        assert watched(src), f"COPY {src}: a change there would not redeploy (watchPatterns)"
    assert "--from=build /app /app" in runtime("COPY")


def test_no_cache_mount_railway_would_reject() -> None:
    # Railway only accepts cache mounts whose id is `s/<service id>-<path>`.
    for item in dockerfile():
        for mount in re.findall(r"--mount=(\S+)", item.args):
            if "type=cache" in mount:
                assert "id=s/" in mount, f"cache mount without a Railway id: {mount}"


# ---- .dockerignore -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "tests",
        "tests/test_deploy.py",
        ".env",
        ".env.production",
        "agent/.env",
        ".git",
        ".git/HEAD",
        ".venv/bin/python",
        "data/journal.sqlite",
        "bench/run.py",
        "docs/deploy.md",
        "agent/__pycache__/config.cpython-311.pyc",
        ".mypy_cache/x",
        ".ruff_cache/x",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert dockerignored(path)


@pytest.mark.parametrize(
    "path", ["agent/config.py", "prompts/system.md", "pyproject.toml", "uv.lock", ENTRYPOINT.name]
)
def test_dockerignore_keeps_in(path: str) -> None:
    assert not dockerignored(path)


# ---- docker-entrypoint.sh ------------------------------------------------------------------------


def entrypoint_run(
    *command: str, env: dict[str, str], as_user: int | None = None
) -> tuple[subprocess.Popen[str], str, str]:
    """Run the entrypoint with sh (the script text passed with -c, so any user can read it),
    optionally as another user via setpriv; returns the process and its output."""
    argv = ["sh", "-c", ENTRYPOINT.read_text(), ENTRYPOINT.name, *command]
    if as_user is not None:
        entry = pwd.getpwuid(as_user)
        argv = [
            "setpriv",
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
            "--clear-groups",
            *argv,
        ]
    process = subprocess.Popen(
        argv,
        env={"PATH": os.environ["PATH"], **env},
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    out, err = process.communicate(timeout=30)
    return process, out, err


def test_entrypoint_syntax() -> None:
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    assert os.access(ENTRYPOINT, os.X_OK), "docker-entrypoint.sh must be executable"
    subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=True)
    code = [line.strip() for line in ENTRYPOINT.read_text().splitlines()]
    code = [line for line in code if line and not line.startswith("#")]
    assert code[-1] == 'exec "$@"'


def test_entrypoint_without_a_command_fails() -> None:
    process, _, err = entrypoint_run(env={})
    assert process.returncode == 64 and "no command" in err


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)


@needs_root
def test_entrypoint_as_root_gives_the_data_dir_to_the_user_then_execs_as_it(
    tmp_path: Path,
) -> None:
    nobody = pwd.getpwnam("nobody")
    data = tmp_path / "volume" / "data"
    data.mkdir(parents=True)
    (data / "left-by-root.sqlite").write_text("")  # an earlier root run's file
    process, out, err = entrypoint_run(
        "sh",
        "-c",
        'echo "$$ $(id -u) $(id -g)"',
        env={"AGENT_RUN_AS": "nobody", "AGENT_DATA_DIR": str(data / "nested")},
    )
    assert process.returncode == 0, err
    pid, uid, gid = out.split()
    assert int(pid) == process.pid, "the command must replace the shell (exec), not run under it"
    assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid)
    assert (data / "nested").stat().st_uid == nobody.pw_uid
    process, out, err = entrypoint_run(
        "true", env={"AGENT_RUN_AS": "nobody", "AGENT_DATA_DIR": str(data)}
    )
    assert process.returncode == 0, err
    assert (data / "left-by-root.sqlite").stat().st_uid == nobody.pw_uid


def test_entrypoint_as_non_root_execs_the_command_unchanged(tmp_path: Path) -> None:
    as_user = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else None
    if as_user is not None and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot become a non-root user")
    expected_uid = as_user if as_user is not None else os.geteuid()
    data = tmp_path / "untouched"
    process, out, err = entrypoint_run(
        "sh", "-c", 'echo "$$ $(id -u)"', env={"AGENT_DATA_DIR": str(data)}, as_user=as_user
    )
    assert process.returncode == 0, err
    pid, uid = out.split()
    assert int(pid) == process.pid
    assert int(uid) == expected_uid
    assert not data.exists()


# ---- the locked non-dev set runs the worker's CLI ------------------------------------------------


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH")
def test_locked_non_dev_install_runs_the_cli_with_an_empty_environment(tmp_path: Path) -> None:
    """The image installs `uv sync --locked --no-dev`: a runtime import of a dev-only package
    (pytest, aiortc, numpy from the dev group, ...) would only show up there. Same set here."""
    uv = shutil.which("uv")
    assert uv is not None
    requirements = tmp_path / "requirements.txt"
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    uv_env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "UV_PROJECT"}}

    def uv_run(*args: str) -> None:
        result = subprocess.run(
            [uv, *args], cwd=ROOT, env=uv_env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"uv {' '.join(args)}:\n{result.stderr}"

    uv_run(
        "export", "--locked", "--no-dev", "--no-hashes", "--format", "requirements-txt",
        "--no-emit-project", "--quiet", "-o", str(requirements),
    )  # fmt: skip
    uv_run("venv", "--quiet", "--python", sys.executable, str(venv))
    uv_run(
        "pip",
        "install",
        "--quiet",
        "--compile-bytecode",
        "-r",
        str(requirements),
        "--python",
        str(python),
    )

    home = tmp_path / "home"
    home.mkdir()
    empty_env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(python), *args],
            cwd=ROOT,
            env=empty_env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    every_module = (
        "import importlib, pkgutil, agent\n"
        "for m in pkgutil.iter_modules(agent.__path__):\n"
        "    importlib.import_module('agent.' + m.name)\n"
    )
    for args in (
        ("-c", every_module),
        ("-m", "agent", "--help"),
        ("-m", "agent", "download-files"),
    ):
        result = run(*args)
        assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    schema = run("-m", "agent", "schema")
    assert schema.returncode == 0, schema.stderr
    assert isinstance(json.loads(schema.stdout), dict)
    # `start` without credentials: the configuration error, exit 2 (not an ImportError)
    start = run("-m", "agent", "start")
    assert start.returncode == 2, start.stderr
    assert "LIVEKIT_URL" in start.stderr


# ---- the deploy guide (docs/deploy.md) ----------------------------------------------------------


def test_the_deploy_guide_names_the_service_variables_and_the_same_draining_time() -> None:
    text = DEPLOY_DOC.read_text()
    for name in (
        "RAILWAY_DEPLOYMENT_DRAINING_SECONDS",
        "RAILWAY_DEPLOYMENT_OVERLAP_SECONDS",
        "RAILWAY_HEALTHCHECK_TIMEOUT_SEC",
        "RAILWAY_DOCKERFILE_PATH",
        "RAILWAY_RUN_UID",
    ):
        assert name in text, name
    draining = deploy()["drainingSeconds"]
    assert f"RAILWAY_DEPLOYMENT_DRAINING_SECONDS={draining}" in text
    assert f"RAILWAY_HEALTHCHECK_TIMEOUT_SEC={deploy()['healthcheckTimeout']}" in text
