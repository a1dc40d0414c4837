#!/usr/bin/env bash
# bench/compare.sh — beamline against ejabberd 23.01 (Debian) on this machine,
# in one run, with the same load generator flags; then our 3-node cluster.
#
#   bench/compare.sh [OUTDIR]          (default: docs/bench-data/<UTC date>/)
#
# Needs: the ejabberd package (/usr/lib/x86_64-linux-gnu/ejabberd-*, /usr/bin/erl;
# the systemd service is not used), openssl, python3, cargo. Run as root or
# as a user that may run `erl` (ejabberd runs as the calling user).
#
# Environment:
#   CARGO_TARGET_DIR   where cargo builds (default: <repo>/target)
#   SKIP_BUILD=1       use the binaries already built
#   B_USERS=15000      sessions of scenario b (STARTTLS + SCRAM, idle memory)
#   ONLY="a b c"       scenarios to run
#   SERVERS="ejabberd beamline"   servers of scenarios a and b
#   SERVER_CPUS=1 LOADGEN_CPUS=0  pin every thread of the server (a, b: taskset
#                      -a) and the load generator to these CPUs, so that
#                      the clients do not take the server's CPU (default:
#                      both share every CPU)
#
# What it does (docs/benchmarks.md explains every figure):
#   1. cargo build --release -p beamline -p beamline-loadgen
#      --bin beamline --bin beamline-loadgen --example xmpp_cluster
#   2. Scenario a, for ejabberd then beamline, each a fresh server in its own
#      temp dir on a free loopback port, 1,000 accounts made, each logged
#      in once with SCRAM-SHA-256 (warm-up: the load generator's SCRAM cache
#      file gets the salted passwords) and the server restarted; plaintext
#      c2s: SASL PLAIN login, 5 s idle hold, 200 senders
#      at 2,000 msg/s for 10 s (a-rate-SERVER.json/.svg); then on the same
#      server a second run: SCRAM-SHA-256 login with the cached salted
#      passwords (still no TLS), closed loop with window 4 for 10 s
#      (a-closed-SERVER.json/.svg: saturation).
#   3. Scenario b, each a fresh server, B_USERS accounts made, a warm-up
#      login of each with STARTTLS + SCRAM-SHA-256 and the server restarted:
#      STARTTLS + SCRAM-SHA-256 login with the cached salted passwords
#      (X25519 key exchange for both servers: see the load generator's
#      --tls-pq), 10 s idle hold
#      (b-SERVER.json/.svg: login throughput, CPU per 1,000 logins, memory
#      per idle session).
#   Accounts: ejabberd `bench/ejabberd/ejabberd.sh provision` (credentials
#   derived in python, stored by one Erlang node), beamline in-band
#   registration (beamline-loadgen --provision inband --provision-only).
#   4. Scenario c: our 3-node cluster (examples/xmpp_cluster), 1,000 users
#      (registered with `beamline ctl` through node 1), user i on node i mod 3,
#      SCRAM-SHA-256 without TLS (PLAIN is not offered in plain text there),
#      rate and closed-loop runs as in a (c-rate-cluster.json,
#      c-closed-cluster.json); RSS and CPU are the sum of the three nodes.
#   5. bench/table.py OUTDIR > OUTDIR/table.md
#
# Every server is started by this script and stopped by its PID at the end
# (or on error / Ctrl-C). Load goes to 127.0.0.1 only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/docs/bench-data/$(date -u +%F)}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
B_USERS="${B_USERS:-15000}"
ONLY="${ONLY:-a b c}"
SERVERS="${SERVERS:-ejabberd beamline}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

log() { echo "[$(date -u +%T)] $*" >&2; }

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building release binaries in $TARGET"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p beamline -p beamline-loadgen \
        --bin beamline --bin beamline-loadgen --example xmpp_cluster)
fi
LG="$TARGET/release/beamline-loadgen"
BL="$TARGET/release/beamline"
CL="$TARGET/release/examples/xmpp_cluster"
for b in "$LG" "$BL" "$CL"; do [[ -x $b ]] || { echo "missing $b" >&2; exit 1; }; done

WORK="$(mktemp -d /tmp/beamline-bench.XXXXXX)"
log "work directory $WORK, results in $OUT"

# Servers started here, stopped on exit: "kind:pid_or_dir".
STARTED=()
cleanup() {
    local s
    for s in "${STARTED[@]}"; do
        case $s in
        ej:*) "$ROOT/bench/ejabberd/ejabberd.sh" stop "${s#ej:}" 2>/dev/null || true ;;
        pid:*) stop_pid "${s#pid:}" ;;
        esac
    done
    STARTED=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# SIGTERM to PID (one we started), SIGKILL after 30 s.
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    log "pid $pid did not stop in 30 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

forget() { # drop an entry from STARTED once stopped
    local e=$1 s keep=()
    for s in "${STARTED[@]}"; do [[ $s == "$e" ]] || keep+=("$s"); done
    STARTED=("${keep[@]}")
}

# A port P in 20000..30999 (below the ephemeral range) such that P+o is
# free on 127.0.0.1 for every offset o given.
free_port() {
    python3 - "$@" <<'EOF'
import random, socket, sys
offsets = [int(x) for x in sys.argv[1:]] or [0]
for _ in range(500):
    p = random.randrange(20000, 30000)
    ok = True
    for o in offsets:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p + o))
        except OSError:
            ok = False
        finally:
            s.close()
        if not ok:
            break
    if ok:
        print(p)
        sys.exit(0)
sys.exit("no free port")
EOF
}

pin() { # PID: every thread of a server we started onto SERVER_CPUS
    [[ -n ${SERVER_CPUS:-} ]] || return 0
    taskset -a -cp "$SERVER_CPUS" "$1" >/dev/null
}

wait_port() { # PORT PID SECONDS
    local port=$1 pid=$2 i
    for i in $(seq 1 $(($3 * 5))); do
        kill -0 "$pid" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}

# --- ejabberd -------------------------------------------------------------
# Each server: start_X NAME (fresh directory, free port; sets PORT, PID, DIR),
# restart_X (same directory and port, new process), stop_X, provision_X N.
ej_start() {
    DIR="$WORK/ejabberd-$1"
    PORT="$(free_port 0 1)"
    ej_run
}
ej_run() {
    STARTED+=("ej:$DIR")
    PID="$("$ROOT/bench/ejabberd/ejabberd.sh" start "$DIR" "$PORT")"
    pin "$PID"
    log "ejabberd pid $PID on 127.0.0.1:$PORT ($DIR)"
}
ej_stop() {
    "$ROOT/bench/ejabberd/ejabberd.sh" stop "$DIR" || true
    forget "ej:$DIR"
}
ej_provision() { # N: accounts load0..load(N-1), password pw
    "$ROOT/bench/ejabberd/ejabberd.sh" provision "$DIR" load "$1" pw
}

# --- beamline, one node ---------------------------------------------------
bl_start() {
    DIR="$WORK/beamline-$1"
    mkdir -p "$DIR"
    PORT="$(free_port 0)"
    # The default modules plus mod_register (open, no wait) for provisioning;
    # PLAIN without TLS on loopback; STARTTLS optional; no per-IP limit to
    # speak of; group commit (ejabberd's Mnesia does not fsync per commit).
    cat >"$DIR/beamline.toml" <<EOF
hosts = ["localhost"]
log_level = "warn"

[[listeners]]
kind = "c2s"
ip = "127.0.0.1"
port = $PORT
starttls = "optional"
max_connections_per_ip = 100000

[auth]
plain_on_loopback_without_tls = true

[storage]
data_dir = "$DIR/data"
sync = "group"

[access_rules]
register = [{ allow = "all" }]

[modules.mod_roster]
[modules.mod_presence]
[modules.mod_offline]
[modules.mod_disco]
[modules.mod_ping]
[modules.mod_version]
[modules.mod_time]
[modules.mod_vcard]
[modules.mod_private]
[modules.mod_blocking]
[modules.mod_caps]
[modules.mod_register]
registration_timeout = 0
EOF
    "$BL" check-config "$DIR/beamline.toml" >/dev/null
    bl_run
}
bl_run() {
    (cd "$DIR" && exec "$BL" serve --config "$DIR/beamline.toml" --name "bench@localhost" \
        </dev/null >>"$DIR/serve.log" 2>&1) &
    PID=$!
    STARTED+=("pid:$PID")
    wait_port "$PORT" "$PID" 60 || { tail -n 20 "$DIR/serve.log" >&2; exit 1; }
    pin "$PID"
    log "beamline pid $PID on 127.0.0.1:$PORT ($DIR)"
}
bl_stop() {
    stop_pid "$PID"
    forget "pid:$PID"
}
bl_provision() { # N: in-band registration (XEP-0077), no sessions
    "$LG" --server "127.0.0.1:$PORT" --users "$1" --provision inband --provision-only \
        --quiet --json "$DIR/provision.json"
    python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["provisioning"]; print("created", p["created"], "existing", p["existing"], "failed", p["failed"], "in", round(p["duration_s"], 1), "s")' "$DIR/provision.json"
}

short() { [[ $1 == ejabberd ]] && echo ej || echo bl; }
# A fresh server of kind $1 with $3 accounts, restarted after provisioning
# (so that its memory before login owes nothing to the registrations).
# With FLAGS: every account logs in once with them and out again before
# the restart, filling DIR/scram.cache with the salted passwords, so that
# the measured logins skip PBKDF2 as a client that saved it does (the
# measured runs pass --scram-cache "$DIR/scram.cache").
fresh_server() { # KIND NAME USERS [WARM-UP FLAGS...]
    local k kind=$1 name=$2 users=$3
    shift 3
    k="$(short "$kind")"
    "${k}_start" "$name"
    log "provisioning $users accounts on $kind"
    "${k}_provision" "$users" >&2
    if [[ $# -gt 0 ]]; then
        log "warm-up logins on $kind (SCRAM cache): $*"
        "$LG" --server "127.0.0.1:$PORT" --users "$users" --hold 0 --quiet \
            --login-timeout 600 --scram-cache "$DIR/scram.cache" "$@" --json "$DIR/warm-up.json"
    fi
    "${k}_stop"
    "${k}_run"
    sleep 2
}
stop_server() { "$(short "$1")_stop"; }

lg() { # NAME FLAGS...: one load generator run, JSON and SVG into OUT
    local name=$1
    shift
    log "run $name: beamline-loadgen $*"
    local run=("$LG")
    [[ -z ${LOADGEN_CPUS:-} ]] || run=(taskset -c "$LOADGEN_CPUS" "$LG")
    if ! "${run[@]}" "$@" --json "$OUT/$name.json" --svg "$OUT/$name.svg" 2>"$OUT/$name.log"; then
        log "run $name FAILED: $(tail -n 3 "$OUT/$name.log")"
        return 0
    fi
    python3 - "$OUT/$name.json" <<'EOF' >&2
import json, sys
s = json.load(open(sys.argv[1]))
l = s["phases"]["login"]; m = s["phases"]["messaging"]; r = s["resources"] or {}
line = f"  login {l['ok']}/{l['attempted']} at {l['per_s']:.0f}/s"
if l["failed"]:
    line += f" FAILURES {l['failures']}"
if m:
    line += f"; sent {m['sent']} delivered {m['delivered']} ({m['delivered_per_s']:.0f}/s) p99 {m['latency_ms']['p99']} ms"
if r:
    line += f"; rss/session {r.get('rss_bytes_per_session_after_hold')} B"
print(line)
EOF
}

# Same flags for both servers.
A_COMMON=(--users 1000 --senders 200 --duration 10 --drain 5 --quiet)
B_COMMON=(--users "$B_USERS" --starttls --mechanism scram-sha256 --hold 10 --login-timeout 300 --quiet)

# What else runs on the machine (other builds make the figures noisy).
busiest() {
    top -b -n 2 -d 1 -o %CPU -w 120 2>/dev/null | awk '/^top -/ {n++} n == 2' |
        sed -n '8,12p' | awk '{printf "    %s%% %s\n", $9, $12}'
}

echo "$(date -u +%FT%TZ)" >"$OUT/started"
{
    echo "date: $(date -u +%FT%TZ)"
    echo "uname: $(uname -srm)"
    echo "cpus: $(nproc)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "rustc: $(rustc --version)"
    echo "ejabberd: $(dpkg-query -W -f '${Version}' ejabberd 2>/dev/null || echo unknown)"
    echo "erlang: $(dpkg-query -W -f '${Version}' erlang-base 2>/dev/null || echo unknown)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "busiest processes at start (top, 1 s):"
    busiest
    echo "B_USERS: $B_USERS"
    echo "SERVER_CPUS: ${SERVER_CPUS:-all}; LOADGEN_CPUS: ${LOADGEN_CPUS:-all}"
} >"$OUT/machine.txt"

for S in $SERVERS; do
    if [[ " $ONLY " == *" a "* ]]; then
        fresh_server "$S" a 1000 --mechanism scram-sha256
        lg "a-rate-$S" --server "127.0.0.1:$PORT" --server-pid "$PID" \
            "${A_COMMON[@]}" --mechanism plain --hold 5 --rate 2000
        lg "a-closed-$S" --server "127.0.0.1:$PORT" --server-pid "$PID" \
            "${A_COMMON[@]}" --mechanism scram-sha256 --hold 2 --rate 0 --window 4 \
            --scram-cache "$DIR/scram.cache"
        stop_server "$S"
    fi
    if [[ " $ONLY " == *" b "* ]]; then
        fresh_server "$S" b "$B_USERS" --starttls --mechanism scram-sha256
        lg "b-$S" --server "127.0.0.1:$PORT" --server-pid "$PID" "${B_COMMON[@]}" \
            --scram-cache "$DIR/scram.cache"
        stop_server "$S"
    fi
done

if [[ " $ONLY " == *" c "* ]]; then
    base="$(free_port 0 10 20)"
    cport="$(free_port 0 1 2)"
    cdir="$WORK/cluster"
    log "cluster: c2s $base/+10/+20, cluster ports $cport/+1/+2, $cdir"
    mkdir -p "$cdir"
    # Its own process group (setsid) so that it gets SIGINT (a background
    # job of a script ignores it); it stops its three nodes on SIGINT.
    setsid "$CL" --beamline "$BL" --base-port "$base" --cluster-port "$cport" --dir "$cdir" \
        --users "" </dev/null >"$cdir/launcher.log" 2>&1 &
    CPID=$!
    STARTED+=("pid:$CPID")
    for i in $(seq 1 600); do
        grep -qs "The cluster runs" "$cdir/launcher.log" && break
        kill -0 "$CPID" 2>/dev/null || { cat "$cdir/launcher.log" >&2; exit 1; }
        sleep 0.2
    done
    grep -q "The cluster runs" "$cdir/launcher.log" || { cat "$cdir/launcher.log" >&2; exit 1; }
    NODE_PIDS="$(awk '/^node[0-9] pid/ {print $3}' "$cdir/launcher.log" | paste -sd,)"
    for p in ${NODE_PIDS//,/ }; do STARTED+=("pid:$p"); done
    log "cluster nodes: pids $NODE_PIDS"
    SERVERS_C="127.0.0.1:$base,127.0.0.1:$((base + 10)),127.0.0.1:$((base + 20))"
    # 20 source addresses: the nodes keep the default limit of 100
    # connections per address.
    # The first run fills the SCRAM cache, the second logs in with it.
    C_COMMON=(--users 1000 --mechanism scram-sha256 --source-addrs 20 --senders 200 --duration 10 --drain 5 --quiet
        --scram-cache "$cdir/scram.cache")
    lg c-rate-cluster --server "$SERVERS_C" --server-pid "$NODE_PIDS" --provision ctl \
        --provision-ctl "$BL ctl --config $cdir/node1.toml" "${C_COMMON[@]}" --hold 5 --rate 2000
    lg c-closed-cluster --server "$SERVERS_C" --server-pid "$NODE_PIDS" \
        "${C_COMMON[@]}" --hold 2 --rate 0 --window 4
    kill -INT "$CPID" 2>/dev/null || true
    for i in $(seq 1 150); do kill -0 "$CPID" 2>/dev/null || break; sleep 0.2; done
    cleanup # whatever is left of the cluster, by PID
fi

{
    echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "busiest processes at end (top, 1 s):"
    busiest
} >>"$OUT/machine.txt"
python3 "$ROOT/bench/table.py" "$OUT" >"$OUT/table.md"
cat "$OUT/table.md"
log "done; results in $OUT"
rm -rf "$WORK"
