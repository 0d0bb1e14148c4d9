# Voice-agent worker image: `python -m agent start`, with python as the process that receives
# SIGTERM. Built by Railway from railway.toml; the deploy guide is docs/deploy.md.
#
# No BuildKit cache mount on purpose: Railway's builder rejects `--mount=type=cache` unless its id
# is `s/<service id>-<path>`, and the K-services topology builds this one file for several service
# ids. The dependency layer below is still cached as a layer: it changes only with uv.lock.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# uv, pinned; it exists only in the build stage.
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# ---- build: the locked, non-dev environment plus the source, byte-compiled -----------------------
FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /uvx /bin/
ENV UV_COMPILE_BYTECODE=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-dev --no-install-project
COPY agent/ ./agent/
COPY prompts/ ./prompts/
COPY docker-entrypoint.sh ./
RUN chmod 0755 docker-entrypoint.sh \
    && .venv/bin/python -m compileall -q --invalidation-mode unchecked-hash agent

# ---- runtime --------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# The app user (uid/gid 10001) owns /data; the code stays root-owned and read-only to it.
# setpriv (util-linux, Essential in bookworm) is how the entrypoint drops root: check it is here.
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/app \
        --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown 10001:10001 /data \
    && setpriv --version
ENV PATH="/app/.venv/bin:${PATH}" \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/app \
    AGENT_DATA_DIR=/data
WORKDIR /app
COPY --from=build /app /app
USER 10001:10001
# Imports the worker (fails the build if it does not import with the locked non-dev set) and runs
# the download step of the plugins it uses, as the runtime user. Needs no credentials. It
# downloads nothing (Silero's model ships in its wheel); onnxruntime leaves its telemetry device
# id under ~/.cache, which baked into the image would be every container's one id: removed.
RUN python -m agent download-files && rm -rf "$HOME/.cache"
# The worker's health server (GET / -> 200 "OK"); it listens on $PORT, 8081 by default.
EXPOSE 8081
# Exec form all the way: the entrypoint execs (setpriv then) python, which becomes PID 1.
ENTRYPOINT ["/app/docker-entrypoint.sh"]
CMD ["/app/.venv/bin/python", "-m", "agent", "start"]
