#!/usr/bin/env bash
# A whole HA cluster on this one machine (docs/ha.md): a 3-node ZooKeeper
# ensemble, three `marathon serve --zk` masters and two `marathon agent`
# machines, everything on 127.0.0.1 and everything under one work dir.
#
#   scripts/ha-cluster.sh [start] [WORK_DIR]   start it (default /tmp/marathon-ha)
#   scripts/ha-cluster.sh status [WORK_DIR]    what runs, who leads
#   scripts/ha-cluster.sh revive [WORK_DIR]    start again whatever was killed
#   scripts/ha-cluster.sh stop [WORK_DIR]      stop everything it started
#
# Needs what `make setup` installs (.venv) and Debian's zookeeper (with java
# and slf4j-simple); scripts/install-system-deps.sh is run when they are
# missing.  Ports: ZooKeeper 2181-2183 (quorum 2888-2890, election
# 3888-3890), masters 8081-8083, agents 5051-5052, tasks 21000-21999.
#
# Every process is started in a session of its own and recorded in
# WORK_DIR/run/<name>.pid as "pid start-time"; `stop` signals exactly those
# (SIGTERM, SIGKILL after 15 s), never a process found by name, and checks
# the start time so that a reused pid is left alone.  Tasks outlive their
# agent by design, so `stop` also ends the processes whose MESOS_SANDBOX
# lies under WORK_DIR (the tasks these agents started).  State (ZooKeeper's
# data, the agents' checkpoints) is kept: `start` on the same work dir
# brings the same cluster back; delete the work dir to start afresh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MARATHON=$ROOT/.venv/bin/marathon
ZK_JAR=/usr/share/java/zookeeper.jar
SLF4J_JAR=/usr/share/java/slf4j-simple.jar

ZK_CLIENT_PORTS=(2181 2182 2183)
ZK_QUORUM_PORTS=(2888 2889 2890)
ZK_ELECTION_PORTS=(3888 3889 3890)
MASTER_PORTS=(8081 8082 8083)
AGENT_PORTS=(5051 5052)
AGENT_TASK_PORTS=(21000-21499 21500-21999)

command=start
case "${1:-}" in
    start|stop|status|revive) command=$1; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
WORK=${1:-/tmp/marathon-ha}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RUN=$WORK/run
LOGS=$WORK/logs

ZK_HOSTS=$(printf '127.0.0.1:%s,' "${ZK_CLIENT_PORTS[@]}")
ZK_URL="zk://${ZK_HOSTS%,}/marathon"

say() { printf '%s\n' "$*"; }
die() { printf 'ha-cluster: %s\n' "$*" >&2; exit 1; }

# -- processes, by recorded pid ------------------------------------------------

start_time() {  # the kernel's start time of pid $1 (field 22 of its stat), or nothing
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }            # after the command name, which may hold spaces
    set -- $stat
    printf '%s' "${20}"
}

recorded_pid() {  # the pid recorded for $1 if that very process still runs
    local file=$RUN/$1.pid pid started
    [ -f "$file" ] || return 0
    read -r pid started < "$file" || return 0
    [ -n "$pid" ] && [ "$(start_time "$pid")" = "$started" ] && printf '%s' "$pid"
    return 0
}

spawn() {  # spawn NAME COMMAND...: start it in a session of its own, log and record it
    local name=$1 pid
    shift
    printf '%q ' "$@" > "$RUN/$name.cmd"
    # Not a process-group leader here (no job control), so setsid does not
    # fork: $! is the process itself.
    setsid "$@" < /dev/null >> "$LOGS/$name.log" 2>&1 &
    pid=$!
    printf '%s %s\n' "$pid" "$(start_time "$pid")" > "$RUN/$name.pid"
}

names() {  # every process name recorded in this work dir, in start order
    local n
    for n in zk1 zk2 zk3 m1 m2 m3 a1 a2; do
        [ -f "$RUN/$n.pid" ] && printf '%s\n' "$n"
    done
    return 0
}

signal_all() {  # signal_all SIG NAME...: signal each recorded process still running
    local sig=$1 name pid
    shift
    for name in "$@"; do
        pid=$(recorded_pid "$name")
        [ -n "$pid" ] && kill "-$sig" "$pid" 2> /dev/null || true
    done
}

wait_gone() {  # wait_gone SECONDS NAME...: true once none of them runs
    local deadline=$((SECONDS + $1)) name alive
    shift
    while :; do
        alive=""
        for name in "$@"; do
            [ -n "$(recorded_pid "$name")" ] && alive="$alive $name"
        done
        [ -z "$alive" ] && return 0
        [ $SECONDS -ge $deadline ] && { say "still running after SIGTERM:$alive" >&2; return 1; }
        sleep 0.2
    done
}

stop_group() {  # SIGTERM, then SIGKILL after 15 s
    [ $# -gt 0 ] || return 0
    signal_all TERM "$@"
    wait_gone 15 "$@" || { signal_all KILL "$@"; wait_gone 5 "$@" || true; }
}

task_pids() {  # pids of processes whose MESOS_SANDBOX lies under this work dir
    local environ pid
    for environ in /proc/[0-9]*/environ; do
        pid=${environ#/proc/}
        pid=${pid%/environ}
        # A process may exit during the scan: its environ is gone (quietly).
        if { tr '\0' '\n' < "$environ"; } 2> /dev/null | grep -q "^MESOS_SANDBOX=$WORK/"; then
            printf '%s\n' "$pid"
        fi
    done
    return 0
}

stop_tasks() {
    local pids
    pids=$(task_pids)
    [ -n "$pids" ] || return 0
    say "stopping $(printf '%s\n' $pids | wc -l) task processes (sandboxes under $WORK)"
    kill -TERM $pids 2> /dev/null || true
    local deadline=$((SECONDS + 10))
    while [ -n "$(task_pids)" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    pids=$(task_pids)
    [ -z "$pids" ] || kill -KILL $pids 2> /dev/null || true
}

cmd_stop() {
    local agents=() masters=() zks=() n
    for n in $(names); do
        case $n in a*) agents+=("$n") ;; m*) masters+=("$n") ;; zk*) zks+=("$n") ;; esac
    done
    # Agents first (their tasks stay: they are stopped next), then the
    # tasks, the masters, and ZooKeeper last (a master without it only waits).
    say "stopping agents: ${agents[*]:-none}"
    stop_group "${agents[@]}"
    stop_tasks
    say "stopping masters: ${masters[*]:-none}"
    stop_group "${masters[@]}"
    say "stopping ZooKeeper: ${zks[*]:-none}"
    stop_group "${zks[@]}"
    local left=""
    for n in $(names); do
        [ -n "$(recorded_pid "$n")" ] && left="$left $n"
    done
    [ -z "$left" ] || die "still running:$left"
    [ -z "$(task_pids)" ] || die "task processes still running: $(task_pids | tr '\n' ' ')"
    say "stopped; state kept in $WORK (delete it to start afresh)"
}

# -- waiting -----------------------------------------------------------------

zk_mode() {  # ZooKeeper's `srvr` Mode on port $1 (leader, follower), or nothing
    timeout 2 bash -c '
        exec 3<> "/dev/tcp/127.0.0.1/$1" || exit 0
        printf srvr >&3
        while IFS= read -r line <&3; do
            case $line in Mode:*) printf "%s" "${line#Mode: }" ;; esac
        done' _ "$1" 2> /dev/null || true
}

http_get() {  # http_get URL: the body, or nothing
    "$ROOT/.venv/bin/python" - "$1" << 'EOF' 2> /dev/null || true
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        sys.stdout.write(r.read().decode())
except Exception:
    pass
EOF
}

wait_until() {  # wait_until SECONDS WHAT COMMAND...: poll COMMAND until it succeeds
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.5
    done
    say "  $what"
}

check_alive() {  # a recorded process that already exited: show its log and give up
    local n
    for n in "$@"; do
        if [ -z "$(recorded_pid "$n")" ]; then
            tail -n 30 "$LOGS/$n.log" >&2 || true
            die "$n exited (log: $LOGS/$n.log); run '$0 stop $WORK' to stop the rest"
        fi
    done
}

quorum() {
    check_alive zk1 zk2 zk3
    local p serving=0 leaders=0 mode
    for p in "${ZK_CLIENT_PORTS[@]}"; do
        mode=$(zk_mode "$p")
        [ -n "$mode" ] && serving=$((serving + 1))
        [ "$mode" = leader ] && leaders=$((leaders + 1))
    done
    [ $serving -eq 3 ] && [ $leaders -eq 1 ]
}

pinged() {
    check_alive "$1"
    [ "$(http_get "http://127.0.0.1:$2/ping")" = pong ]
}

leader_of() {  # what master on port $1 says leads, host:port, or nothing
    http_get "http://127.0.0.1:$1/v2/leader" | sed -n 's/.*"leader":"\([^"]*\)".*/\1/p'
}

agreed_leader() {  # every master names the same leader, and it serves
    local p l first=""
    for p in "${MASTER_PORTS[@]}"; do
        l=$(leader_of "$p")
        [ -n "$l" ] || return 1
        [ -z "$first" ] && first=$l
        [ "$l" = "$first" ] || return 1
    done
    http_get "http://$first/v2/info" | grep -q '"elected":true'
}

registered_agents() {  # how many agents the leader has REGISTERED
    local l
    l=$(leader_of "${MASTER_PORTS[0]}")
    [ -n "$l" ] || { printf 0; return; }
    http_get "http://$l/v2/agents" | grep -o '"state":"REGISTERED"' | wc -l
}

two_agents() {
    check_alive a1 a2
    [ "$(registered_agents)" -ge 2 ]
}

# -- start -------------------------------------------------------------------

port_free() {
    ! (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null
}

write_zk_config() {  # node i (0-based): the same settings as marathon.testing.zookeeper
    local i=$1 myid=$(($1 + 1)) dir=$WORK/zk/n$(($1 + 1)) j
    mkdir -p "$dir/data"
    printf '%s\n' "$myid" > "$dir/data/myid"
    {
        # tickTime 2000 (ZooKeeper's default): sessions of 4 s to 40 s.
        printf 'tickTime=2000\ninitLimit=10\nsyncLimit=5\n'
        printf 'dataDir=%s\nclientPort=%s\nclientPortAddress=127.0.0.1\n' "$dir/data" "${ZK_CLIENT_PORTS[$i]}"
        printf 'maxClientCnxns=0\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\n'
        # One machine, a demo: no fsync (remove this line for data you keep).
        printf 'forceSync=no\n'
        for j in 0 1 2; do
            printf 'server.%s=127.0.0.1:%s:%s\n' $((j + 1)) "${ZK_QUORUM_PORTS[$j]}" "${ZK_ELECTION_PORTS[$j]}"
        done
    } > "$dir/zoo.cfg"
}

cmd_start() {
    [ -x "$MARATHON" ] || die "$MARATHON is missing: run 'make setup' first"
    if ! command -v java > /dev/null || [ ! -e "$ZK_JAR" ] || [ ! -e "$SLF4J_JAR" ]; then
        say "java or Debian's zookeeper is missing: running scripts/install-system-deps.sh"
        "$ROOT/scripts/install-system-deps.sh" || die "install java and zookeeper first (as root)"
    fi
    local n running=""
    for n in $(names); do
        [ -n "$(recorded_pid "$n")" ] && running="$running $n"
    done
    [ -z "$running" ] || die "already running in $WORK:$running ('$0 stop $WORK' first, or '$0 revive $WORK')"
    local p
    for p in "${ZK_CLIENT_PORTS[@]}" "${ZK_QUORUM_PORTS[@]}" "${ZK_ELECTION_PORTS[@]}" "${MASTER_PORTS[@]}" \
             "${AGENT_PORTS[@]}"; do
        port_free "$p" || die "port $p is in use on 127.0.0.1"
    done
    mkdir -p "$RUN" "$LOGS"
    rm -f "$RUN"/*.pid "$RUN"/*.cmd
    local secret=$WORK/agent.secret
    if [ ! -s "$secret" ]; then
        (umask 077 && head -c 32 /dev/urandom | base64 > "$secret")
    fi

    say "ZooKeeper ensemble on $ZK_HOSTS"
    local i
    for i in 0 1 2; do
        write_zk_config "$i"
        spawn "zk$((i + 1))" java -Xmx256m -XX:+UseSerialGC -cp "$ZK_JAR:$SLF4J_JAR" \
            -Dorg.slf4j.simpleLogger.defaultLogLevel=info \
            org.apache.zookeeper.server.quorum.QuorumPeerMain "$WORK/zk/n$((i + 1))/zoo.cfg"
    done
    wait_until 90 "quorum: $(printf '%s ' "${ZK_CLIENT_PORTS[@]}")" quorum \
        || die "no ZooKeeper quorum in 90 s (logs: $LOGS/zk*.log)"

    say "masters (--zk $ZK_URL)"
    for i in 0 1 2; do
        spawn "m$((i + 1))" "$MARATHON" serve --zk "$ZK_URL" --master agents --agent_secret_file "$secret" \
            --http_address 127.0.0.1 --http_port "${MASTER_PORTS[$i]}" --hostname 127.0.0.1 \
            --data_dir "$WORK/m$((i + 1))"
    done
    for i in 0 1 2; do
        wait_until 60 "m$((i + 1)) answers on :${MASTER_PORTS[$i]}" pinged "m$((i + 1))" "${MASTER_PORTS[$i]}" \
            || die "m$((i + 1)) does not answer /ping (log: $LOGS/m$((i + 1)).log)"
    done
    wait_until 60 "every master names the same leader" agreed_leader \
        || die "the masters do not agree on a leader (logs: $LOGS/m*.log)"

    # Each agent offers half of this machine (they share it).
    local cpus mem
    cpus=$(( $(nproc) / 2 )); [ "$cpus" -ge 1 ] || cpus=1
    mem=$(( $(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo) / 2048 ))
    say "agents (--master $ZK_URL)"
    for i in 0 1; do
        spawn "a$((i + 1))" "$MARATHON" agent --master "$ZK_URL" --secret_file "$secret" \
            --work_dir "$WORK/a$((i + 1))" --hostname 127.0.0.1 --http_port "${AGENT_PORTS[$i]}" \
            --ports "${AGENT_TASK_PORTS[$i]}" --resources "cpus:$cpus;mem:$mem;disk:10000" \
            --attributes "agent:a$((i + 1))"
    done
    wait_until 60 "two agents registered" two_agents \
        || die "the agents did not register (logs: $LOGS/a*.log)"
    cmd_status
    cat << EOF

Logs:     $LOGS/{zk1,zk2,zk3,m1,m2,m3,a1,a2}.log
Pids:     $RUN/*.pid ("pid start-time"; *.cmd holds each command line)
Try:      curl 127.0.0.1:8082/v2/leader                  # any master answers
          curl -X POST -H 'Content-Type: application/json' 127.0.0.1:8082/v2/apps \\
               -d '{"id":"/sleep","cmd":"sleep 3600","cpus":0.1,"mem":16,"instances":4}'
          kill -9 \$(cut -d' ' -f1 $RUN/m<N>.pid)             # the leader; another takes over
          $0 revive $WORK       # start again what was killed
Stop:     $0 stop $WORK
EOF
}

cmd_revive() {
    local n pid revived=""
    [ -d "$RUN" ] || die "nothing was started in $WORK"
    for n in $(names); do
        [ -n "$(recorded_pid "$n")" ] && continue
        [ -f "$RUN/$n.cmd" ] || continue
        eval "spawn $n $(cat "$RUN/$n.cmd")"
        revived="$revived $n"
    done
    say "started again:${revived:- nothing (everything runs)}"
}

cmd_status() {
    local n pid i l
    say "processes ($WORK):"
    for n in $(names); do
        pid=$(recorded_pid "$n")
        printf '  %-4s %s\n' "$n" "${pid:-not running}"
    done
    say "leader, as each master says:"
    for i in 0 1 2; do
        l=$(leader_of "${MASTER_PORTS[$i]}")
        printf '  m%s http://127.0.0.1:%s  %s\n' $((i + 1)) "${MASTER_PORTS[$i]}" "${l:-(no answer)}"
    done
    say "agents registered with the leader: $(registered_agents)"
}

case $command in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    revive) cmd_revive ;;
esac
