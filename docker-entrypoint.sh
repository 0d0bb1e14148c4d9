#!/bin/sh
# Container entrypoint. Whatever the branch, the command is exec'd: it replaces this shell, so
# python is the process Railway's SIGTERM reaches (no wrapper in between that could swallow it).
#
# - Started as a non-root user (the image's default, USER 10001 "app"): run the command as is.
# - Started as root (a Railway service with a volume, RAILWAY_RUN_UID=0, because Railway mounts
#   volumes owned by root): create the data directory, give it to the app user, then exec the
#   command as that user with setpriv (util-linux; Essential in Debian bookworm, so in the slim
#   image). Root is used for nothing else.
#
# AGENT_DATA_DIR is the worker's data directory (default /data in the image). AGENT_RUN_AS names
# the user to drop to (default app); it exists so the tests can exercise the root branch.
set -eu

if [ "$#" -eq 0 ]; then
    echo "docker-entrypoint.sh: no command given" >&2
    exit 64
fi

if [ "$(id -u)" = "0" ]; then
    run_as="${AGENT_RUN_AS:-app}"
    data_dir="${AGENT_DATA_DIR:-/data}"
    uid="$(id -u "$run_as")"
    gid="$(id -g "$run_as")"
    mkdir -p -- "$data_dir"
    # Recursive: files left by an earlier root run must become writable too (the journal is small).
    chown -R -- "$uid:$gid" "$data_dir"
    exec setpriv --reuid="$uid" --regid="$gid" --init-groups -- "$@"
fi

exec "$@"
