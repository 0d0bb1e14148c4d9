#!/usr/bin/env bash
# Build the worker image from the unchanged Dockerfile with buildah (no Docker engine, no container
# registry) and check its deploy behaviour with podman: one PASS/FAIL line per check, exit 1 on any
# FAIL. The two FROM images are replaced by local stand-ins made from Debian and PyPI packages
# (how they differ from the real ones: tests/image/README.md). Needs root.
#
#   VOICE_AGENT_IMAGE_CACHE  cache and work files (default /var/cache/voice-agent-image)
#   IMAGE                    tag to build (default localhost/voice-agent:test)
#   CHECK_MAX_RETRY          LiveKit dials before the worker gives up, give-up check (default 4;
#                            16, the worker's default, takes ~134 s)
#   REBUILD_BASES=1          remake the stand-in base images (and the debootstrap rootfs)
#   DEBIAN_MIRROR            mirror for debootstrap (default: the one apt uses)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${VOICE_AGENT_IMAGE_CACHE:-/var/cache/voice-agent-image}"
IMAGE="${IMAGE:-localhost/voice-agent:test}"
MAX_RETRY="${CHECK_MAX_RETRY:-4}"
WORK="$CACHE/run"  # logs and volumes of the last run: outside the repo, kept for inspection
STANDIN="voice-agent.check-image.stand-in=true"  # label on the base images this script makes
T0=$SECONDS
FAILS=0
say() { echo "-- $*" >&2; }
trap 'echo "FAIL script: unexpected error at line $LINENO (exit $?)"' ERR
pass() { echo "PASS $1: ${*:2}"; }
fail() { echo "FAIL $1: ${*:2}"; FAILS=$((FAILS + 1)); }

# ---- tools: install when root, skip outside CI when that is not possible ------------------------
have_tools() { command -v buildah >/dev/null && command -v podman >/dev/null; }
if ! have_tools || ! command -v debootstrap >/dev/null || ! command -v runc >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing buildah podman debootstrap runc with apt"
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            buildah podman debootstrap runc; } >/dev/null 2>&1 || say "apt-get install failed"
    fi
fi
if ! have_tools; then
    if [ "${CI:-}" = true ]; then
        echo "FAIL tools: buildah and podman are missing and could not be installed"
        exit 1
    fi
    echo "SKIP: buildah and podman are missing (as root: apt-get install buildah podman" \
        "debootstrap runc); no image check ran"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "FAIL tools: run as root (debootstrap, chown of the test volumes)"
    exit 1
fi

mkdir -p "$CACHE"
rm -rf "$WORK"
mkdir -p "$WORK"

# Podman asks the runtime for nofile=1048576 and an nproc above the RLIMIT_NPROC of 32768 it sets
# for itself; without CAP_SYS_RESOURCE (a sandbox, a VM like this one) setrlimit then fails. So
# ask for what this process may have. And crun refuses hosts with hybrid cgroups (v1 + v2), where
# runc works: prefer runc when it is installed. CONTAINERS_CONF reaches podman and buildah alike.
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
[ "$nofile" != unlimited ] || nofile=1048576
if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
{
    echo '[containers]'
    echo "default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
    if command -v runc >/dev/null; then printf '[engine]\nruntime = "runc"\n'; fi
} >"$WORK/containers.conf"
export CONTAINERS_CONF="$WORK/containers.conf"

# ---- stand-ins for the FROM images, made once and cached in podman's storage --------------------
# Read from the Dockerfile, so a bump of uv is followed (the python tag is tied to bookworm here).
UV_REF=$(sed -n 's/^FROM \(ghcr\.io\/astral-sh\/uv:[^ ]*\).*/\1/p' "$REPO/Dockerfile")
PY_REF=$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$REPO/Dockerfile")
if [ "$PY_REF" != python:3.11-slim-bookworm ] || [ -z "$UV_REF" ]; then
    echo "FAIL bases: the Dockerfile's FROM images ($PY_REF, $UV_REF) are not the ones this" \
        "script can stand in for (python:3.11-slim-bookworm, ghcr.io/astral-sh/uv:*)"
    exit 1
fi
PY_REF="docker.io/library/$PY_REF"  # what the short name resolves to locally
if [ "${REBUILD_BASES:-}" = 1 ]; then
    podman rmi -f "$UV_REF" "$PY_REF" >/dev/null 2>&1 || true
    rm -rf "$CACHE/rootfs" "$CACHE/uv"
fi

if ! podman image exists "$UV_REF"; then
    # The real image holds only /uv and /uvx; the PyPI wheel of the same version has both.
    uv_version=${UV_REF##*:}
    say "making $UV_REF from the uv==$uv_version wheel"
    rm -rf "$CACHE/uv" && mkdir -p "$CACHE/uv"
    if ! python3 -m pip download --no-deps --only-binary=:all: -d "$CACHE/uv" "uv==$uv_version" \
        >"$WORK/pip.log" 2>&1; then
        tail -n 20 "$WORK/pip.log"
        echo "FAIL bases: pip download uv==$uv_version failed"
        exit 1
    fi
    python3 -m zipfile -e "$CACHE"/uv/uv-*.whl "$CACHE/uv/wheel"
    scripts="$CACHE/uv/wheel/uv-$uv_version.data/scripts"
    chmod 0755 "$scripts/uv" "$scripts/uvx"  # zipfile drops the modes
    ctr=$(buildah from scratch)
    buildah copy -q "$ctr" "$scripts/uv" "$scripts/uvx" / >/dev/null
    buildah config --label "$STANDIN" --entrypoint '["/uv"]' "$ctr"
    buildah commit -q --rm "$ctr" "$UV_REF" >/dev/null
fi

if ! podman image exists "$PY_REF"; then
    rootfs="$CACHE/rootfs"
    if [ ! -d "$rootfs" ]; then
        mirror=${DEBIAN_MIRROR:-$(grep -hsv '^ *#' /etc/apt/sources.list /etc/apt/sources.list.d/* |
            grep -v security | grep -oE 'https?://[^ ]+/debian/?' | head -n1 || true)}
        mirror=${mirror:-http://deb.debian.org/debian}
        say "debootstrap bookworm from $mirror (about a minute)"
        rm -rf "$rootfs.tmp"
        if ! debootstrap --variant=minbase --include=python3.11,ca-certificates,netbase,tzdata \
            bookworm "$rootfs.tmp" "$mirror" >"$WORK/debootstrap.log" 2>&1; then
            tail -n 20 "$WORK/debootstrap.log"
            echo "FAIL bases: debootstrap failed (log: $WORK/debootstrap.log)"
            exit 1
        fi
        mv "$rootfs.tmp" "$rootfs"  # a complete rootfs or none
    fi
    say "importing $PY_REF"
    # The real image's python lives in /usr/local/bin; the Dockerfile's UV_PYTHON points there.
    ln -sfn /usr/bin/python3.11 "$rootfs/usr/local/bin/python3.11"
    ln -sfn python3.11 "$rootfs/usr/local/bin/python3"
    ln -sfn python3.11 "$rootfs/usr/local/bin/python"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
    path=/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin  # the real one
    changes=(--change "LABEL $STANDIN" --change "ENV PATH=$path" --change 'ENV LANG=C.UTF-8'
        --change 'CMD ["python3"]')
    # Where PyPI is reached through a TLS-intercepting proxy, the host trusts its CA here; the
    # build's uv must trust it too (uv reads SSL_CERT_FILE; its own default roots lack it).
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
        changes+=(--change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt')
    fi
    tar --numeric-owner -C "$rootfs" -c . | podman import -q "${changes[@]}" - "$PY_REF" >/dev/null
fi
for ref in "$PY_REF" "$UV_REF"; do
    label=$(podman image inspect -f '{{index .Labels "voice-agent.check-image.stand-in"}}' "$ref")
    say "base $ref: $([ "$label" = true ] && echo "local stand-in" || echo "not made here (real?)")"
done

# ---- build: the Dockerfile as it is, no build args; layers cached for the next run ---------------
say "building $IMAGE (log: $WORK/build.log)"
t=$SECONDS
# Build RUN steps use podman's default network: `uv sync` needs PyPI.
before=$(buildah containers -q)
rc=0
(cd "$REPO" && buildah bud --pull-never --layers -t "$IMAGE" -f Dockerfile .) \
    >"$WORK/build.log" 2>&1 || rc=$?
# buildah 1.28 leaves a working container behind for the FROM-only `uv` stage: remove this build's
for ctr in $(buildah containers -q); do
    grep -qx "$ctr" <<<"$before" || buildah rm "$ctr" >/dev/null
done
if [ "$rc" = 0 ]; then
    pass build "buildah bud, no build args, $((SECONDS - t)) s"
else
    tail -n 30 "$WORK/build.log"
    fail build "buildah bud failed after $((SECONDS - t)) s (log: $WORK/build.log)"
    echo "$FAILS failed; took $((SECONDS - T0)) s"
    exit 1
fi

# ---- containers: each with --network none; LIVEKIT_URL points at a closed loopback port ----------
PREFIX="voice-agent-check-$$"
STARTED=()
cleanup() { # keep each worker's log in $WORK, then remove the containers this run started
    for c in "${STARTED[@]}"; do
        log="$WORK/${c#"$PREFIX"-}.log"
        [ -e "$log" ] || podman logs "$c" >"$log" 2>&1 || true
        podman rm -f -t 0 "$c" >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT
ENV_ARGS=(-e LIVEKIT_URL=ws://127.0.0.1:9 -e LIVEKIT_API_KEY=devkey
    -e LIVEKIT_API_SECRET=secret-secret-secret-secret-0123 -e OPENAI_API_KEY=sk-test
    -e AGENT_NAME=test -e PORT=8081
    -e NUM_IDLE_PROCESSES=1) # one job process each: five workers share two cores below
DIALLING=(-e LIVEKIT_MAX_RETRY=100) # the workers other than give-up: still dialling at the end
# podman's --read-only adds tmpfs at /tmp, /var/tmp and /run; Docker's and Kubernetes' do not.
RO=(--read-only --read-only-tmpfs=false)
volume() { # a fresh host directory for /data, owned as the image's /data is (or by $2)
    rm -rf "${WORK:?}/$1" && mkdir -p "$WORK/$1" && chown "${2:-10001:10001}" "$WORK/$1"
    echo "$WORK/$1"
}
start() { # NAME ARGS...: a detached container
    local name=$1
    shift
    STARTED+=("$PREFIX-$name")
    podman run -d --name "$PREFIX-$name" --network none "$@" >/dev/null ||
        fail "start-$name" "podman run failed"
}
run_fg() { # NAME ARGS...: runs to its end (60 s at most); output in $out, returns its code
    local name=$1 rc=0
    shift
    STARTED+=("$PREFIX-$name")
    timeout 60 podman run --name "$PREFIX-$name" --network none "$@" >"$WORK/$name.log" 2>&1 ||
        rc=$?
    out=$(<"$WORK/$name.log")
    return $rc
}
PROBE='import sys, urllib.request as u, urllib.error as e
try:
    r = u.urlopen("http://127.0.0.1:8081" + sys.argv[1], timeout=2)
    print(r.status, r.read().decode())
except e.HTTPError as x:
    print(x.code, x.read().decode())
except OSError as x:
    print("no answer")'
probe() { podman exec "$PREFIX-$1" python -c "$PROBE" "${2:-/}" 2>/dev/null | tail -n1; }
running() { [ "$(podman inspect -f '{{.State.Status}}' "$PREFIX-$1" 2>/dev/null)" = running ]; }
exit_code() { podman inspect -f '{{.State.ExitCode}}' "$PREFIX-$1"; }
logs() { podman logs "$PREFIX-$1" 2>&1; }
pid1() { # "<command line> (uid <real uid>)" of the container's PID 1
    podman exec "$PREFIX-$1" sh -c 'printf "%s(uid %s)" "$(tr "\0" " " </proc/1/cmdline)" \
        "$(awk "/^Uid:/{print \$2}" /proc/1/status)"'
}
PYTHON_PID1="/app/.venv/bin/python -m agent start (uid 10001)"

# -- quick ones, one after the other
out=$(podman run --rm --network none "$IMAGE" id -u 2>&1) || true
if [ "$out" = 10001 ]; then pass non-root "id -u = 10001"; else fail non-root "id -u: $out"; fi
# the build's import check leaves nothing behind: no cache, no onnxruntime device id for every
# container to share
out=$(podman run --rm --network none "$IMAGE" sh -c 'ls -A "$HOME/.cache" 2>/dev/null' 2>&1) || true
if [ -z "$out" ]; then pass no-build-leftovers "\$HOME/.cache empty or absent"
else fail no-build-leftovers "\$HOME/.cache holds: $out"; fi

rc=0
run_fg no-env "$IMAGE" || rc=$?
missing=()
for var in LIVEKIT_URL LIVEKIT_API_KEY LIVEKIT_API_SECRET OPENAI_API_KEY AGENT_NAME; do
    grep -q "$var: missing" <<<"$out" || missing+=("$var")
done
if [ "$rc" = 2 ] && [ ${#missing[@]} = 0 ]; then
    pass config-error "no env: exit 2, the five variables named"
else
    fail config-error "no env: exit $rc, not named: ${missing[*]:-none}; output: $out"
fi

rc=0
run_fg ro-nothing "${RO[@]}" "${ENV_ARGS[@]}" "$IMAGE" || rc=$?
if [ "$rc" = 2 ] && grep -q AGENT_DATA_DIR <<<"$out"; then
    pass ro-nothing-writable "--read-only, no tmpfs, no volume: exit 2 naming AGENT_DATA_DIR"
else
    fail ro-nothing-writable "exit $rc: $out"
fi

# AGENT_DATA_DIR/tmp longer than the forkserver's socket path allows: the temp-dir check's error
rc=0
long="/data/$(printf 'd%.0s' {1..80})"
run_fg ro-long "${RO[@]}" -v "$(volume data-long)":/data -e AGENT_DATA_DIR="$long" \
    "${ENV_ARGS[@]}" "$IMAGE" || rc=$?
if [ "$rc" = 2 ] && grep -q 'TMPDIR: no writable temporary directory' <<<"$out"; then
    pass ro-long-data-dir "--read-only, AGENT_DATA_DIR/tmp too long: exit 2 naming TMPDIR"
else
    fail ro-long-data-dir "exit $rc: $out"
fi

# -- workers, side by side
start give-up -e LIVEKIT_MAX_RETRY="$MAX_RETRY" "${ENV_ARGS[@]}" "$IMAGE"
start plain "${DIALLING[@]}" "${ENV_ARGS[@]}" "$IMAGE"
start ro-tmp "${RO[@]}" --tmpfs /tmp -v "$(volume data-ro-tmp)":/data "${DIALLING[@]}" \
    "${ENV_ARGS[@]}" "$IMAGE"
start ro-data "${RO[@]}" -v "$(volume data-ro)":/data "${DIALLING[@]}" "${ENV_ARGS[@]}" "$IMAGE"
root_dir=$(volume data-root 0:0)
mkdir "$root_dir/old" && touch "$root_dir/old/journal-left-by-root"  # chown -R must reach it
start root --user 0 -v "$root_dir":/data "${DIALLING[@]}" "${ENV_ARGS[@]}" "$IMAGE"
t=$SECONDS

# The give-up worker: `/` must be 503 until it gives up, then it exits 3. Record what it answers.
seen="" last="" answered=""
while running give-up && [ $((SECONDS - t)) -lt $((MAX_RETRY * 12 + 60)) ]; do
    a=$(probe give-up) || a="exec failed"
    if [ "$a" != "$last" ]; then seen+="${seen:+; }$((SECONDS - t))s $a" && last=$a; fi
    [ -n "$answered" ] || [ "$a" = "no answer" ] || [ "$a" = "exec failed" ] || answered=$a
    sleep 0.5
done
if running give-up; then code="still running"; else code=$(exit_code give-up); fi
seen+="; $((SECONDS - t))s exit $code"
if [ "$answered" = "503 not registered with LiveKit yet" ] && ! grep -q ' 200 ' <<<"$seen" &&
    [ "$code" = 3 ]; then
    pass health-until-registered "GET / (LIVEKIT_MAX_RETRY=$MAX_RETRY): $seen"
else
    fail health-until-registered "GET / (LIVEKIT_MAX_RETRY=$MAX_RETRY): $seen"
fi
log=$(logs give-up)  # (`podman logs | grep -q` would fail with pipefail when grep stops early)
if grep -q "failed to connect to livekit after $MAX_RETRY attempts" <<<"$log"; then
    pass give-up-message "'worker failed: failed to connect to livekit after $MAX_RETRY attempts'"
else
    fail give-up-message "no 'failed to connect' line; log tail: $(tail -n 3 <<<"$log")"
fi

while [ $((SECONDS - t)) -lt 15 ]; do sleep 1; done  # give the job processes their chance

out=$(pid1 plain 2>&1) || true
if [ "$out" = "$PYTHON_PID1" ]; then pass python-pid1 "$out"; else fail python-pid1 "$out"; fi
out=$(probe plain /ready) || true
if [ "$out" = "503 not registered with LiveKit" ]; then
    pass ready-503 "GET /ready: $out"
else
    fail ready-503 "GET /ready: $out"
fi

bad='No usable temporary directory|error initializing process'
for name in ro-tmp ro-data; do
    log=$(logs $name)
    temp_dir=$(grep -o '"message": "worker.temp_dir"[^}]*"path": "[^"]*"' <<<"$log" |
        sed 's/.*"path": "//; s/"$//') || true
    want_temp=""
    if [ $name = ro-data ]; then want_temp=/data/tmp; fi  # /tmp is writable in ro-tmp
    if running $name && ! grep -qE "$bad" <<<"$log" && grep -q '"process initialized"' <<<"$log" &&
        [ "$temp_dir" = "$want_temp" ]; then
        pass read-only-$name "running after $((SECONDS - t)) s, job process initialized," \
            "temp dir: ${temp_dir:-/tmp (default)}"
    else
        fail read-only-$name "running=$(running $name && echo yes || echo no)," \
            "worker.temp_dir=${temp_dir:-none}; $(grep -cE "$bad" <<<"$log") bad lines;" \
            "log tail: $(tail -n 3 <<<"$log")"
    fi
done

out=$(pid1 root 2>&1) || true
not_app=$(find "$root_dir" ! -uid 10001 | wc -l)
if [ "$out" = "$PYTHON_PID1" ] && [ "$not_app" = 0 ]; then
    pass root-entrypoint "--user 0: /data chowned to 10001 (recursively), PID 1: $out"
else
    fail root-entrypoint "PID 1: $out; $not_app paths under /data not owned by 10001"
fi

# SIGTERM to each live worker (all still dialling LiveKit): each must exit 0, and soon
for name in plain ro-tmp ro-data root; do
    podman kill --signal TERM "$PREFIX-$name" >/dev/null || true
done
t=$SECONDS
codes=""
for name in plain ro-tmp ro-data root; do
    code=$(timeout 60 podman wait "$PREFIX-$name" 2>/dev/null) || code=timeout
    codes+="${codes:+ }$name=$code"
done
if [ "$codes" = "plain=0 ro-tmp=0 ro-data=0 root=0" ]; then
    pass sigterm "exit codes: $codes, within $((SECONDS - t)) s"
else
    fail sigterm "exit codes: $codes"
fi

# SIGTERM in the first second, while python imports: PID 1 ignores a signal it has no handler
# for, and the LiveKit CLI installs its handler only later (agent/__main__.py installs one first).
start early "${DIALLING[@]}" "${ENV_ARGS[@]}" "$IMAGE"
sleep 0.5
podman kill --signal TERM "$PREFIX-early" >/dev/null || true
t=$SECONDS
code=$(timeout 15 podman wait "$PREFIX-early" 2>/dev/null) || code=""
if [ "$code" = 0 ]; then
    pass sigterm-during-boot "SIGTERM 0.5 s after start: exit 0 after $((SECONDS - t)) s"
elif [ -n "$code" ]; then
    fail sigterm-during-boot "SIGTERM 0.5 s after start: exit $code"
else
    fail sigterm-during-boot "SIGTERM 0.5 s after start was lost: still running after 15 s" \
        "(it would run until SIGKILL, drainingSeconds later)"
fi

echo "$FAILS failed; took $((SECONDS - T0)) s"
if [ "$FAILS" != 0 ]; then exit 1; fi
