#!/usr/bin/env bash
# A private ejabberd (Debian's 23.01 package) for benchmarks, without systemd
# and without touching /etc/ejabberd or /var/lib/ejabberd.
#
#   bench/ejabberd/ejabberd.sh start DIR PORT   start one in DIR (config, spool,
#                                               logs, cert), c2s on 127.0.0.1:PORT;
#                                               prints the beam.smp PID (also in
#                                               DIR/beam.pid) once c2s accepts
#   bench/ejabberd/ejabberd.sh stop DIR         stop it (SIGTERM to that PID,
#                                               SIGKILL after 20 s)
#   bench/ejabberd/ejabberd.sh ctl DIR ARGS...  ejabberdctl ARGS against it, e.g.
#                                               `ctl DIR register alice localhost pw`
#   bench/ejabberd/ejabberd.sh provision DIR PREFIX COUNT PASSWORD [OFFSET]
#                                               accounts PREFIX<OFFSET> ..
#                                               PREFIX<OFFSET+COUNT-1> on host
#                                               localhost, fast (see provision())
#
# The VM runs as the calling user (root here) straight from `erl`, as
# ejabberdctl's `foreground` would but without its `su ejabberd`: own config
# (DIR/ejabberd.yml from ejabberd.yml.in), own Mnesia spool (DIR/spool), own
# logs (DIR/logs), own node name (ejabberd-bench-PORT@localhost) and a random
# cookie (DIR/cookie). Erlang distribution listens on PORT+1 on loopback and
# epmd is not used (-erl_epmd_port, -start_epmd false), so nothing outlives
# `stop`. ERL_MAX_PORTS 65536 and +P 1000000 leave room for 16,000 sessions
# (the open-files limit, `ulimit -n`, is the real bound).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ERL=/usr/bin/erl
EJ_LIBS=/usr/lib/x86_64-linux-gnu

die() { echo "ejabberd.sh: $*" >&2; exit 1; }

node_of() { echo "ejabberd-bench-$(cat "$1/port")@localhost"; }

# Common environment of the server VM and of the ctl VMs.
erl_env() {
    local dir=$1
    export ERL_LIBS=$EJ_LIBS
    export EJABBERD_CONFIG_PATH="$dir/ejabberd.yml"
    export EJABBERD_LOG_PATH="$dir/logs/ejabberd.log"
    export EJABBERD_PID_PATH="$dir/ejabberd.pid"
    export ERL_CRASH_DUMP="$dir/logs/erl_crash.dump"
    export ERL_CRASH_DUMP_BYTES=0
    export ERL_INETRC=/etc/ejabberd/inetrc
    export ERL_MAX_PORTS=65536
    export ERL_MAX_ETS_TABLES=1400
    export CONTRIB_MODULES_CONF_DIR="$dir/modules.d"
    export CONTRIB_MODULES_PATH="$dir/contrib"
    export SCRIPT_DIR=/usr/sbin
}

start() {
    local dir=$1 port=$2
    [[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number"
    mkdir -p "$dir/spool" "$dir/logs" "$dir/modules.d" "$dir/contrib"
    dir="$(cd "$dir" && pwd)"
    [[ -f $dir/beam.pid ]] && kill -0 "$(cat "$dir/beam.pid")" 2>/dev/null &&
        die "already running in $dir (pid $(cat "$dir/beam.pid"))"
    echo "$port" >"$dir/port"
    local dist=$((port + 1))
    echo "$dist" >"$dir/dist_port"
    [[ -f $dir/cookie ]] || head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$dir/cookie"
    chmod 600 "$dir/cookie"
    # A self-signed ECDSA P-256 certificate for localhost (as ours makes).
    if [[ ! -f $dir/cert.pem ]]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$dir/key.pem" -out "$dir/crt.pem" -days 30 -subj "/CN=localhost" \
            -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
        cat "$dir/crt.pem" "$dir/key.pem" >"$dir/cert.pem"
        chmod 600 "$dir/cert.pem" "$dir/key.pem"
    fi
    sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" "$HERE/ejabberd.yml.in" >"$dir/ejabberd.yml"
    erl_env "$dir"
    local node
    node="$(node_of "$dir")"
    # erl execs erlexec which execs beam.smp: $! is the VM's PID.
    (
        cd "$dir/spool"
        exec "$ERL" -sname "$node" -setcookie "$(cat "$dir/cookie")" \
            -erl_epmd_port "$dist" -start_epmd false \
            -kernel inet_dist_use_interface '{127,0,0,1}' \
            +P 1000000 +Q 65536 \
            -mnesia dir "\"$dir/spool\"" -s ejabberd -noinput -noshell \
            </dev/null >"$dir/logs/stdout.log" 2>&1
    ) &
    local pid=$!
    echo "$pid" >"$dir/beam.pid"
    # Ready when the c2s port accepts (at most 60 s).
    local i
    for i in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || {
            tail -n 20 "$dir/logs/stdout.log" >&2 || true
            die "ejabberd exited while starting (see $dir/logs)"
        }
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            local exe
            exe="$(readlink "/proc/$pid/exe" || true)"
            [[ $exe == */beam.smp ]] || echo "ejabberd.sh: warning: pid $pid is $exe, not beam.smp" >&2
            echo "$pid"
            return 0
        fi
        sleep 0.2
    done
    kill -TERM "$pid" 2>/dev/null || true
    die "c2s port $port not open after 60 s (see $dir/logs)"
}

stop() {
    local dir=$1
    [[ -f $dir/beam.pid ]] || die "no $dir/beam.pid"
    local pid
    pid="$(cat "$dir/beam.pid")"
    # Only our VM: the PID must still be a beam.smp started with this spool.
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$dir/spool"; then
        kill -TERM "$pid"
        local i
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            echo "ejabberd.sh: pid $pid killed after 20 s" >&2
        fi
    fi
    rm -f "$dir/beam.pid"
}

# ejabberd 23.01 derives SCRAM credentials in Erlang (about 38 ms of CPU per
# account here), so `ejabberdctl register` (a VM start per call) or in-band
# registration make 15,000 accounts in minutes. Instead: python3 derives each
# account's SCRAM-SHA-256 credentials (own random 16-byte salt, 4096
# iterations: what ejabberd_auth:password_to_scram/2 would store) with
# hashlib, and one Erlang node stores them with ejabberd_auth:try_register/3,
# which takes a #scram{} record as the password. An existing account counts
# as existing.
provision() {
    local dir=$1 prefix=$2 count=$3 password=$4 offset=${5:-0}
    dir="$(cd "$dir" && pwd)"
    local terms="$dir/provision-$$.terms"
    python3 "$HERE/scram_creds.py" "$prefix" "$count" "$password" "$offset" >"$terms"
    erl_env "$dir"
    local rc=0
    (
        cd "$dir/spool"
        exec "$ERL" -sname "prov-$$-$RANDOM@localhost" -setcookie "$(cat "$dir/cookie")" \
            -erl_epmd_port "$(cat "$dir/dist_port")" -start_epmd false -dist_listen false \
            -hidden -noinput -noshell -eval '
        [Node, File] = init:get_plain_arguments(),
        {ok, Accounts} = file:consult(File),
        Count = fun({U, StoredKey, ServerKey, Salt}, {C, E, F}) ->
            Scram = {scram, StoredKey, ServerKey, Salt, sha256, 4096},
            case rpc:call(list_to_atom(Node), ejabberd_auth, try_register,
                          [U, <<"localhost">>, Scram]) of
                ok -> {C + 1, E, F};
                {error, exists} -> {C, E + 1, F};
                Other -> io:format(standard_error, "~s: ~p~n", [U, Other]), {C, E, F + 1}
            end
        end,
        {C, E, F} = lists:foldl(Count, {0, 0, 0}, Accounts),
        io:format("created ~b existing ~b failed ~b~n", [C, E, F]),
        halt(case F of 0 -> 0; _ -> 1 end).' \
            -extra "$(node_of "$dir")" "$terms"
    ) || rc=$?
    rm -f "$terms"
    return $rc
}

ctl() {
    local dir=$1
    shift
    dir="$(cd "$dir" && pwd)"
    erl_env "$dir"
    cd "$dir/spool"
    exec "$ERL" -sname "ctl-$$-$RANDOM@localhost" -setcookie "$(cat "$dir/cookie")" \
        -erl_epmd_port "$(cat "$dir/dist_port")" -start_epmd false -dist_listen false \
        -hidden -noinput -s ejabberd_ctl -extra "$(node_of "$dir")" "$@"
}

case "${1:-}" in
start) [[ $# -eq 3 ]] || die "usage: $0 start DIR PORT"; start "$2" "$3" ;;
stop) [[ $# -eq 2 ]] || die "usage: $0 stop DIR"; stop "$2" ;;
provision) [[ $# -ge 5 ]] || die "usage: $0 provision DIR PREFIX COUNT PASSWORD [OFFSET]"; provision "$2" "$3" "$4" "$5" "${6:-0}" ;;
ctl) [[ $# -ge 3 ]] || die "usage: $0 ctl DIR ARGS..."; d=$2; shift 2; ctl "$d" "$@" ;;
*) die "usage: $0 start DIR PORT | stop DIR | provision DIR PREFIX COUNT PASSWORD [OFFSET] | ctl DIR ARGS..." ;;
esac
