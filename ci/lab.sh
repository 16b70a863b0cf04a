#!/usr/bin/env bash
# `just lab`: the networking lab, reproduced on one Linux machine with real packets.
#
# Builds the lab's topology in network namespaces — a bridge in a namespace of its own, the server
# host "webserver" (10.20.30.3), clients "client1".."client3" (10.20.30.11-13) and a DNS server,
# dnsmasq in namespace "dns" (10.20.30.2), authoritative for chat.lab (chat.lab -> 10.20.30.3,
# client1..3.chat.lab), which every host's resolver asks (/etc/netns/NS/resolv.conf) — captures with
# tcpdump on the server and on client1, runs the real server and scripted clients by hostname (the
# plaintext server at the default scrypt cost, as deployed), then answers the lab's questions
# with p2pchat-trace and writes everything to target/lab/ (or $LAB_OUT). Twice: a --plaintext run
# (the course's questions are about what the packets carry), then an encrypted run in the default
# mode (TLS to the server, sealed direct messages) with the same password, room text and direct
# message; the lab fails unless each is in the plaintext captures and in neither encrypted one.
#
# Needs root, tcpdump, jq, ethtool and dnsmasq (.ci/run installs them; this script installs nothing). The root namespace
# gets no address or route into 10.20.30.0/24: every packet stays in the namespaces made here, and
# a trap removes them, the processes and the hosts files on success, failure, Ctrl-C or timeout.
#
# Environment: LAB_OUT (output folder, default target/lab), LAB_TIMEOUT (the run after the build,
# default 90 s), LAB_BIN (folder with the three binaries; default: build them into target/debug).
set -euo pipefail
SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SCRIPT")/.."

LAB_TIMEOUT=${LAB_TIMEOUT:-90}
say() { printf '\033[1m== %s\033[0m\n' "$*"; }
die() { echo "ci/lab.sh: $*" >&2; exit 1; }

# ---- preconditions: refuse clearly, install nothing -------------------------------------------
[ "$(id -u)" -eq 0 ] || die "must run as root: it creates network namespaces (try: sudo just lab)"
command -v tcpdump >/dev/null 2>&1 || die "tcpdump is not installed (apt-get install tcpdump; bash .ci/run installs it)"
command -v ip >/dev/null 2>&1 || die "ip (iproute2) is not installed"
command -v ss >/dev/null 2>&1 || die "ss (iproute2) is not installed"
command -v jq >/dev/null 2>&1 || die "jq is not installed (apt-get install jq; bash .ci/run installs it)"
command -v ethtool >/dev/null 2>&1 || die "ethtool is not installed (apt-get install ethtool; bash ci/install.sh installs it)"
command -v dnsmasq >/dev/null 2>&1 || die "dnsmasq is not installed (apt-get install dnsmasq-base; bash ci/install.sh installs it)"
command -v unshare >/dev/null 2>&1 || die "unshare (util-linux) is not installed"

if [ -z "${P2PLAB_BOUNDED:-}" ]; then
  # One lab at a time: a second run must neither clear the first one's output nor tear down its
  # namespaces. Taken before the build, so that a second run fails at once instead of building for
  # minutes (or waiting for cargo's lock on the build folder the first run holds) and failing
  # then. Opened without truncating, so that a refused run can say who holds it; the descriptor
  # passes through exec and timeout(1) to the run below, and the lock is released when that run
  # (the last holder of the descriptor) ends.
  exec 9<>/run/p2plab.lock
  if ! flock -n 9; then
    die "another lab run holds /run/p2plab.lock ($(head -c 200 /run/p2plab.lock)); wait for it to finish, or stop it"
  fi
  echo "process $$ in $PWD, since $(date -u '+%Y-%m-%d %H:%M:%S UTC')" >/run/p2plab.lock
  # Build first (unbounded: a cold build takes minutes), then run the lab itself under timeout(1),
  # whose TERM reaches the trap below.
  if [ -z "${LAB_BIN:-}" ]; then
    say "building p2pchat-server, p2pchat-client, p2pchat-trace"
    cargo build --locked --quiet --bins
    # Where cargo put them: CARGO_TARGET_DIR when set (relative to this folder, as for cargo).
    target=${CARGO_TARGET_DIR:-target}
    case $target in /*) ;; *) target=$PWD/$target ;; esac
    export LAB_BIN=$target/debug
  fi
  export P2PLAB_BOUNDED=1
  exec timeout --foreground --kill-after=15 "$LAB_TIMEOUT" bash "$SCRIPT" "$@"
fi

PREFIX=p2plab
SUBNET=10.20.30
SERVER_IP=$SUBNET.3
SERVER_NAME=chat.lab
PORT=12000
HOSTS=(dns webserver client1 client2 client3)
declare -A IP=([dns]=$SUBNET.2 [webserver]=$SUBNET.3 [client1]=$SUBNET.11 [client2]=$SUBNET.12 [client3]=$SUBNET.13)
DNS_IP=${IP[dns]}
# The lab's zone, as the DNS server answers it: NAME=ADDRESS.
ZONE=("$SERVER_NAME=$SERVER_IP" "client1.$SERVER_NAME=${IP[client1]}" "client2.$SERVER_NAME=${IP[client2]}"
  "client3.$SERVER_NAME=${IP[client3]}")
DIRECT_1="lab direct message 1: alice to bob, peer to peer"
DIRECT_2="lab direct message 2: the new client to bob"
WAIT=15          # seconds: the longest wait for any one event
SETTLE=5         # seconds: the longest wait for tcpdump to write the packets the interfaces counted
POLL=0.05        # seconds between two looks at a log (a polling interval, not a wait for an event)

OUT=${LAB_OUT:-target/lab}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# Only what an earlier run wrote is removed: LAB_OUT may name a folder that holds other files.
rm -rf "$OUT/logs"
rm -f "$OUT"/{chatserver,client1,newclient,newclient-chatserver}.pcap "$OUT/newclient.pcapng" "$OUT"/{handshakes-chatserver,udp-client1}.json \
  "$OUT"/{answers.txt,diagram.txt,diagram.mmd,diagram.svg,diagram.json,diagram-client1.mmd,direct-messages.txt,users.json,names.txt}
# The discovery run's.
rm -f "$OUT/discovery.pcap" "$OUT/discovery.txt"
# The encrypted run's files.
rm -f "$OUT"/{encrypted-chatserver,encrypted-client1}.pcap "$OUT"/diagram-encrypted.{mmd,txt,svg,json} "$OUT"/{eavesdropper.txt,secrets.txt}
# The notebook's answers, and the report of an earlier run: a report.pdf left from another run
# would be read as this run's numbers (`just report` makes a new one from this run's captures).
rm -f "$OUT"/{answers.py,report.pdf,report.html,report-size.txt} "$OUT"/report-*.png
# The server's captures under their names before the course's (chatserver.pcap): `just lab-check`
# checks every capture in the folder, and a stale one would be another run's.
rm -f "$OUT"/{webserver,newclient-webserver,encrypted-webserver}.pcap "$OUT/handshakes-webserver.json"
mkdir -p "$OUT/logs"
RUN=$(mktemp -d /tmp/p2plab.XXXXXX)
START=$(date +%s.%N)

# ---- teardown -----------------------------------------------------------------------------------
PIDS=()          # every background process this script started
CREATED_NS=()    # every namespace this script made: the only ones it removes
CREATED_NETNS_DIR=0
cleanup() {
  local status=$?
  set +e
  trap - EXIT INT TERM
  exec 11>&- 12>&- 13>&- 14>&-
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep "$POLL"; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  for ns in "${CREATED_NS[@]}"; do
    # Anything still running in a namespace this script made was started by it.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
    rm -rf "/etc/netns/$ns"
  done
  [ "$CREATED_NETNS_DIR" = 1 ] && rmdir /etc/netns 2>/dev/null
  rm -rf "$RUN"
  if [ "$status" -ne 0 ]; then
    echo "ci/lab.sh: failed (status $status); logs and partial captures in $OUT" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'echo "ci/lab.sh: interrupted" >&2; exit 130' INT
trap 'echo "ci/lab.sh: stopped (timeout after ${LAB_TIMEOUT}s, or SIGTERM)" >&2; exit 143' TERM

# Waits until FILE contains the fixed string TEXT; WHAT names the event in the error.
wait_for() {
  local file=$1 text=$2 what=$3
  local deadline=$(( $(date +%s) + WAIT ))
  until grep -qF -- "$text" "$file" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "--- $file:" >&2; tail -n 20 "$file" >&2; die "timed out waiting for $what"; }
    sleep "$POLL"
  done
}

# Waits until FILE has at least N lines containing the fixed string TEXT.
wait_count() { # FILE TEXT N WHAT
  local file=$1 text=$2 n=$3 what=$4
  local deadline=$(( $(date +%s) + WAIT ))
  until [ "$(grep -cF -- "$text" "$file" 2>/dev/null)" -ge "$n" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out waiting for $what"
    sleep "$POLL"
  done
}

# Waits for process PID (a child) to exit; fails with WHAT after the deadline.
wait_exit() {
  local pid=$1 what=$2
  local deadline=$(( $(date +%s) + WAIT ))
  while kill -0 "$pid" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out waiting for $what to exit"
    sleep "$POLL"
  done
  wait "$pid" 2>/dev/null || true
}

# Makes namespace NS and remembers it for the teardown (with its hosts folder, if any).
netns_add() {
  CREATED_NS+=("$1")
  ip netns add "$1"
}

# ---- binaries -----------------------------------------------------------------------------------
BIN=$(cd "$LAB_BIN" && pwd)
for b in p2pchat-server p2pchat-client p2pchat-trace; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing"
done
TRACE=$BIN/p2pchat-trace

# ---- topology -----------------------------------------------------------------------------------
for ns in "${HOSTS[@]/#/$PREFIX-}" "$PREFIX-switch"; do
  if ip netns list | grep -qw "$ns"; then
    die "namespace $ns exists (another lab running, or left by a killed run: ip netns del $ns)"
  fi
done
say "topology: bridge in namespace $PREFIX-switch; ${HOSTS[*]} on $SUBNET.0/24"
[ -d /etc/netns ] || { mkdir /etc/netns; CREATED_NETNS_DIR=1; }
netns_add "$PREFIX-switch"
ip netns exec "$PREFIX-switch" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip -n "$PREFIX-switch" link add br0 type bridge stp_state 0
ip -n "$PREFIX-switch" link set br0 up
for host in "${HOSTS[@]}"; do
  ns=$PREFIX-$host
  netns_add "$ns"
  # Per-namespace name resolution: `ip netns exec` bind-mounts /etc/netns/NS/* over /etc/*. The
  # hosts file knows only localhost, so every lab name is asked of the lab's DNS server, on the wire.
  mkdir -p "/etc/netns/$ns"
  echo "127.0.0.1 localhost" >"/etc/netns/$ns/hosts"
  echo "nameserver $DNS_IP" >"/etc/netns/$ns/resolv.conf"
  # IPv6 off before any link is up: no router solicitations or MLD reports in the captures.
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$PREFIX-switch" link add "v-$host" type veth peer name eth0 netns "$ns"
  ip -n "$PREFIX-switch" link set "v-$host" master br0 up
  ip -n "$ns" addr add "${IP[$host]}/24" dev eth0
  ip -n "$ns" link set lo up
  # Checksum offload off: a veth, like a network card, leaves the TCP and UDP sums to "the
  # device" and the sender's capture records the unfinished sum, which Wireshark marks incorrect.
  # With tx checksumming off the kernel computes each sum before the capture sees the packet, so
  # the captured checksum is the one on the wire (and TSO, which needs it, is off too).
  ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null
  ip -n "$ns" link set eth0 up
done
for host in "${HOSTS[@]}"; do
  deadline=$(( $(date +%s) + WAIT ))
  until ip -n "$PREFIX-$host" link show eth0 | grep -q "state UP"; do
    [ "$(date +%s)" -lt "$deadline" ] || die "eth0 of $host did not come up"
    sleep "$POLL"
  done
done
if ip -o addr show | grep -qF " $SUBNET."; then
  die "the root namespace has an address in $SUBNET.0/24; the lab must stay in its namespaces"
fi

# ---- the DNS server -----------------------------------------------------------------------------
# dnsmasq, as the course's own DNS server: authoritative for the lab's names (answered from
# --host-record, never forwarded: --local, --no-resolv), nothing else read from the machine
# (--conf-file=/dev/null, --no-hosts), in the foreground (--no-daemon: no pid file, its log on
# stderr) so that the teardown stops it like every other process here.
say "dnsmasq on dns ($DNS_IP), authoritative for $SERVER_NAME"
DNSMASQ_ARGS=(--no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces
  --listen-address="$DNS_IP" --local="/$SERVER_NAME/" --log-queries --log-facility=-)
for record in "${ZONE[@]}"; do DNSMASQ_ARGS+=(--host-record="${record%%=*},${record#*=}"); done
ip netns exec "$PREFIX-dns" dnsmasq "${DNSMASQ_ARGS[@]}" >"$OUT/logs/dnsmasq.log" 2>&1 &
PIDS+=("$!")
wait_for "$OUT/logs/dnsmasq.log" "started, version" "dnsmasq to start"
# Resolved once before the captures: fails here, clearly, if the lab's DNS does not answer.
for record in "${ZONE[@]}"; do
  got=$(ip netns exec "$PREFIX-client2" getent ahostsv4 "${record%%=*}" | awk 'NR == 1 { print $1 }')
  [ "$got" = "${record#*=}" ] || die "${record%%=*} resolves to \"$got\" on client2, not ${record#*=} (logs/dnsmasq.log)"
done
printf '%s\n' "${ZONE[@]}" >"$OUT/names.txt"
# ---- end of the DNS server ----------------------------------------------------------------------

# ---- captures -----------------------------------------------------------------------------------
# Packet counters of an interface (rx + tx), to know when tcpdump has written everything.
counters() { # NS DEV
  local ns=$1 dev=$2
  echo $(( $(ip netns exec "$ns" cat "/sys/class/net/$dev/statistics/rx_packets") \
         + $(ip netns exec "$ns" cat "/sys/class/net/$dev/statistics/tx_packets") ))
}
declare -A CAPTURE_PID CAPTURE_BASE CAPTURE_NS CAPTURE_DEVS
start_capture() { # NAME HOST INTERFACE [extra tcpdump flags]
  local name=$1 host=$2 iface=$3; shift 3
  local ns=$PREFIX-$host devs base=0 dev
  if [ "$iface" = any ]; then devs="lo eth0"; else devs=$iface; fi
  ip netns exec "$ns" tcpdump -i "$iface" -n -U --immediate-mode -Z root "$@" \
    -w "$OUT/$name.pcap" 2>"$OUT/logs/tcpdump-$name.log" &
  CAPTURE_PID[$name]=$!
  PIDS+=("$!")
  wait_for "$OUT/logs/tcpdump-$name.log" "listening on" "tcpdump ($name) to start"
  # Counted once tcpdump listens: a packet before that (an IGMP report of an interface coming
  # up, say) is not in the file; one between "listening" and this read is in the file but not
  # counted, which only makes the count a lower bound.
  for dev in $devs; do base=$(( base + $(counters "$ns" "$dev") )); done
  CAPTURE_BASE[$name]=$base CAPTURE_NS[$name]=$ns CAPTURE_DEVS[$name]=$devs
}
# Stops a capture once the file holds at least every packet the interfaces counted since it
# started: tcpdump may not have written the last ones yet when the programs are done.
stop_capture() { # NAME
  local name=$1 ns=${CAPTURE_NS[$1]} total dev seen=-1 want
  local deadline=$(( $(date +%s) + SETTLE ))
  while :; do
    total=0
    for dev in ${CAPTURE_DEVS[$name]}; do total=$(( total + $(counters "$ns" "$dev") )); done
    want=$(( total - CAPTURE_BASE[$name] ))
    seen=$("$TRACE" count "$OUT/$name.pcap" 2>/dev/null || echo -1)
    [ "$seen" -ge "$want" ] && break
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "warning: $name.pcap has $seen of the $want packets the interfaces counted" >&2
      break
    fi
    sleep "$POLL"
  done
  kill -INT "${CAPTURE_PID[$name]}"
  wait_exit "${CAPTURE_PID[$name]}" "tcpdump ($name)"
  echo "   $name.pcap: $(tail -n 3 "$OUT/logs/tcpdump-$name.log" | grep -m1 captured)"
}
# Waits until no TCP connection of HOST is between ESTABLISHED and TIME-WAIT (all closed).
wait_closed() { # HOST
  local ns=$PREFIX-$1 deadline=$(( $(date +%s) + WAIT ))
  while ip netns exec "$ns" ss -Htn state connected exclude time-wait | grep -q .; do
    [ "$(date +%s)" -lt "$deadline" ] || die "connections of $1 did not close"
    sleep "$POLL"
  done
}

say "tcpdump on webserver (eth0) and on client1 (any interface)"
start_capture chatserver webserver eth0
start_capture client1 client1 any

# ---- the server and the clients -----------------------------------------------------------------
# --plaintext on both sides: the lab's questions are about what the packets carry, so this run
# keeps the protocol readable in the capture (the default, TLS, would hide every line). The scrypt
# cost is the default one (128 MiB, ~0.4 s a hash), so that the diagram shows what a real login
# costs and that the server serves others meanwhile.
say "p2pchat-server on webserver, port $PORT (--plaintext, default scrypt cost)"
# --no-announce: the course's captures carry the course's packets; the server's mDNS announcement
# has a run of its own (below).
ip netns exec "$PREFIX-webserver" env RUST_LOG=info "$BIN/p2pchat-server" --plaintext --no-announce \
  --bind "0.0.0.0:$PORT" --users "$RUN/users.json" \
  >"$OUT/logs/server.out" 2>"$OUT/logs/server.log" &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_for "$OUT/logs/server.out" "listening on" "the server to listen"

declare -A CLIENT_PID
# How the clients reach the server: --plaintext for the teaching run; the encrypted run (below)
# replaces it with --trust and the server's fingerprint.
CLIENT_MODE=(--plaintext)
# Starts a scripted client on HOST as LOG, reading commands from file descriptor FD.
start_client() { # LOG HOST FD P2P_PORT
  local log=$1 host=$2 fd=$3 port=$4
  mkfifo "$RUN/$log.in"
  ip netns exec "$PREFIX-$host" "$BIN/p2pchat-client" "${CLIENT_MODE[@]}" --server "$SERVER_NAME:$PORT" \
    --p2p-port "$port" --json <"$RUN/$log.in" >"$OUT/logs/$log.jsonl" 2>"$OUT/logs/$log.err" &
  CLIENT_PID[$log]=$!
  PIDS+=("$!")
  eval "exec $fd>\"$RUN/$log.in\""
}
send() { local fd=$1; shift; printf '%s\n' "$@" >&"$fd"; }

say "client1..3 register by hostname ($SERVER_NAME)"
start_client alice client1 11 40001
send 11 register alice alice-password
wait_for "$OUT/logs/alice.jsonl" '"event":"welcome"' "alice's welcome"
start_client bob client2 12 40002
send 12 register bob bob-password
wait_for "$OUT/logs/bob.jsonl" '"event":"welcome"' "bob's welcome"
wait_for "$OUT/logs/alice.jsonl" '"username":"bob"' "alice to see bob join"
start_client carol client3 13 40003
send 13 register carol carol-password
wait_for "$OUT/logs/carol.jsonl" '"event":"welcome"' "carol's welcome"
wait_for "$OUT/logs/bob.jsonl" '"username":"carol"' "bob to see carol join"

say "room messages"
send 11 "hello room, alice here"
wait_for "$OUT/logs/bob.jsonl" '"text":"hello room, alice here"' "bob to get alice's room message"
wait_for "$OUT/logs/carol.jsonl" '"text":"hello room, alice here"' "carol to get alice's room message"
send 12 "hi alice, bob here"
wait_for "$OUT/logs/alice.jsonl" '"text":"hi alice, bob here"' "alice to get bob's room message"

say "client1 sends client2 a direct message over UDP"
send 11 "/msg bob $DIRECT_1"
wait_for "$OUT/logs/bob.jsonl" "\"text\":\"$DIRECT_1\"" "bob to get the direct message"
send 11 ":q"
exec 11>&-
wait_exit "${CLIENT_PID[alice]}" "alice's client"
wait_for "$OUT/logs/bob.jsonl" '"event":"left","username":"alice"' "bob to see alice leave"
wait_closed client1

say "a new client on client1 connects, logs in and sends one direct message (the report's diagram)"
# Like a machine that has never talked to the others: client1 forgets the MAC addresses it
# learnt, so the diagram shows the ARP exchanges a new client makes before its first packets.
ip -n "$PREFIX-client1" neigh flush all
# The same minutes seen from the server's interface too: `p2pchat-trace diagram` merges the two
# captures into one timeline, so the diagram has client1's DNS and direct message as well as the
# joined and left the server pushes to client2 and client3.
start_capture newclient-chatserver webserver eth0
start_capture newclient client1 eth0
start_client alice-again client1 14 40001
send 14 login alice alice-password
# While the server checks alice's password (default scrypt cost), bob talks to the room: the
# diagram shows that traffic between login and welcome, because the hash runs off the tasks that
# read, write and broadcast. bob speaks once the login line has reached the server's socket.
deadline=$(( $(date +%s) + WAIT ))
until ip netns exec "$PREFIX-webserver" ss -Htni state established "( sport = :$PORT and dst ${IP[client1]} )" |
    grep -qE 'bytes_received:[1-9]'; do
  [ "$(date +%s)" -lt "$deadline" ] || die "timed out waiting for the new client's login to reach the server"
  sleep "$POLL"
done
send 12 "bob here, while alice logs in"
wait_for "$OUT/logs/carol.jsonl" '"text":"bob here, while alice logs in"' "carol to get bob's message during the login"
wait_for "$OUT/logs/alice-again.jsonl" '"event":"welcome"' "the new client's welcome"
wait_for "$OUT/logs/carol.jsonl" '"event":"joined","peer":{"username":"alice"' "carol to see the new client join"
send 14 "/msg bob $DIRECT_2"
wait_for "$OUT/logs/bob.jsonl" "\"text\":\"$DIRECT_2\"" "bob to get the second direct message"
send 14 ":q"
exec 14>&-
wait_exit "${CLIENT_PID[alice-again]}" "the new client"
wait_closed client1
wait_count "$OUT/logs/carol.jsonl" '"event":"left","username":"alice"' 2 "carol to see the new client leave"
stop_capture newclient
stop_capture newclient-chatserver
cp "$RUN/users.json" "$OUT/users.json"

say "client2 and client3 leave; the server stops"
send 12 ":q"; exec 12>&-
send 13 ":q"; exec 13>&-
wait_exit "${CLIENT_PID[bob]}" "bob's client"
wait_exit "${CLIENT_PID[carol]}" "carol's client"
kill -TERM "$SERVER_PID"
wait_exit "$SERVER_PID" "the server"
wait_closed webserver
stop_capture chatserver
stop_capture client1

# ---- the encrypted run (the default mode) ----------------------------------------------------------
# The same people and the same texts again, without --plaintext: TLS 1.3 to the server, direct
# messages sealed end to end and acknowledged. Captured on the server's eth0 and on client1's eth0,
# so that the eavesdropper's check below compares like with like.
say "the encrypted run: the same password, room text and direct message, in the default mode"
mkdir -m 700 "$RUN/encrypted"
start_capture encrypted-chatserver webserver eth0
start_capture encrypted-client1 client1 eth0
ip netns exec "$PREFIX-webserver" env RUST_LOG=info "$BIN/p2pchat-server" --no-announce \
  --bind "0.0.0.0:$PORT" --users "$RUN/encrypted/users.json" --scrypt-log-n 10 \
  >"$OUT/logs/encrypted-server.out" 2>"$OUT/logs/encrypted-server.log" &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_for "$OUT/logs/encrypted-server.out" "fingerprint SHA256:" "the TLS server's fingerprint"
# The fingerprint the server printed is the one the clients require (what a TA's script does);
# with --trust the known-servers file is neither read nor written.
FINGERPRINT=$(grep -m1 -o 'SHA256:[A-Za-z0-9+/=]*' "$OUT/logs/encrypted-server.out")
echo "   server fingerprint $FINGERPRINT"
CLIENT_MODE=(--trust "$FINGERPRINT")
start_client encrypted-bob client2 12 40002
send 12 register bob bob-password
wait_for "$OUT/logs/encrypted-bob.jsonl" '"event":"welcome"' "bob's welcome (TLS)"
start_client encrypted-alice client1 11 40001
send 11 register alice alice-password
wait_for "$OUT/logs/encrypted-alice.jsonl" '"event":"welcome"' "alice's welcome (TLS)"
wait_for "$OUT/logs/encrypted-bob.jsonl" '"username":"alice"' "bob to see alice join (TLS)"
send 11 "hello room, alice here"
wait_for "$OUT/logs/encrypted-bob.jsonl" '"text":"hello room, alice here"' "bob to get alice's room message (TLS)"
send 11 "/msg bob $DIRECT_1"
wait_for "$OUT/logs/encrypted-bob.jsonl" "\"text\":\"$DIRECT_1\"" "bob to get the sealed direct message"
wait_for "$OUT/logs/encrypted-alice.jsonl" '"event":"direct_delivered"' "alice to hear it was delivered"
send 11 ":q"; exec 11>&-
wait_exit "${CLIENT_PID[encrypted-alice]}" "alice's client (TLS)"
send 12 ":q"; exec 12>&-
wait_exit "${CLIENT_PID[encrypted-bob]}" "bob's client (TLS)"
kill -TERM "$SERVER_PID"
wait_exit "$SERVER_PID" "the TLS server"
wait_closed webserver
wait_closed client1
stop_capture encrypted-chatserver
stop_capture encrypted-client1
# ---- end of the encrypted run ----------------------------------------------------------------------

# ---- finding the server on the LAN (mDNS) -----------------------------------------------------------
# The server announces itself (DNS-SD over multicast DNS, _p2pchat._tcp) as host "webserver" (a UTS
# namespace of its own, so the name is the lab's, not the machine's); client3 lists what it hears
# (--discover), and a client on client1 started without --server finds the server, joins and
# leaves; then the server stops, saying goodbye. Captured on client1's eth0: the probes, the
# announcements, client1's query and the answer naming the service, the goodbye.
say "finding the server on the LAN: the server announces itself, a client without --server finds it"
mkdir -m 700 "$RUN/discovery"
start_capture discovery client1 eth0
ip netns exec "$PREFIX-webserver" unshare --uts -- sh -c 'hostname webserver && exec "$@"' sh \
  env RUST_LOG=info "$BIN/p2pchat-server" --bind "0.0.0.0:$PORT" --users "$RUN/discovery/users.json" \
  --scrypt-log-n 10 >"$OUT/logs/discovery-server.out" 2>"$OUT/logs/discovery-server.log" &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_for "$OUT/logs/discovery-server.out" "fingerprint SHA256:" "the announcing server's fingerprint"
wait_for "$OUT/logs/discovery-server.log" "announced on the LAN" "the server's announcement"
FINGERPRINT=$(grep -m1 -o 'SHA256:[A-Za-z0-9+/=]*' "$OUT/logs/discovery-server.out")
# --discover listens for 1.5 s; the server answers once its probing is over (under a second), so
# it is asked again until it answers, within the usual wait.
deadline=$(( $(date +%s) + WAIT ))
until ip netns exec "$PREFIX-client3" "$BIN/p2pchat-client" --discover --json >"$OUT/logs/discover.jsonl" \
    2>"$OUT/logs/discover.err" && grep -qF "\"fingerprint\":\"$FINGERPRINT\"" "$OUT/logs/discover.jsonl"; do
  [ "$(date +%s)" -lt "$deadline" ] || die "client3's --discover never listed the server (logs/discover.jsonl)"
done
jq -se --arg s "$SERVER_IP:$PORT" 'any(.[]; .event == "server_found" and .name == "webserver:12000" and .server == $s and .tls)' \
  "$OUT/logs/discover.jsonl" >/dev/null || die "--discover did not list webserver:12000 at $SERVER_IP:$PORT with TLS"
# No --server: the client finds the server, is told it, and joins (--trust: the fingerprint the
# server printed, as a TA's script would give it).
printf '%s\n' register dave dave-password ":q" |
  ip netns exec "$PREFIX-client1" "$BIN/p2pchat-client" --trust "$FINGERPRINT" --json \
    >"$OUT/logs/discovered-dave.jsonl" 2>"$OUT/logs/discovered-dave.err" ||
  die "the client without --server failed (logs/discovered-dave.err)"
jq -se --arg s "$SERVER_IP:$PORT" 'any(.[]; .event == "server_found" and .chosen and .server == $s)' \
  "$OUT/logs/discovered-dave.jsonl" >/dev/null || die "the client without --server did not say which server it found"
grep -qF '"event":"welcome"' "$OUT/logs/discovered-dave.jsonl" || die "the client without --server did not log in"
kill -TERM "$SERVER_PID"
wait_exit "$SERVER_PID" "the announcing server"
grep -qF "mDNS goodbye sent" "$OUT/logs/discovery-server.log" || die "the server did not say goodbye on the LAN"
wait_closed client1
stop_capture discovery
# p2pchat-trace names each mDNS packet: probe, query, the answer naming the service, goodbye.
"$TRACE" udp "$OUT/discovery.pcap" >"$OUT/discovery.txt"
# A probe asks for the host name and the service in one packet, in either order (the responder's
# choice): the service must be among a probe's questions.
grep -F "mDNS probe " "$OUT/discovery.txt" | grep -qF "ANY webserver:12000._p2pchat._tcp.local" ||
  die "p2pchat-trace shows no mDNS probe for webserver:12000._p2pchat._tcp.local in discovery.pcap (discovery.txt)"
for label in "mDNS query PTR _p2pchat._tcp.local" \
  "mDNS answer: service webserver:12000._p2pchat._tcp.local found (PTR _p2pchat._tcp.local), SRV webserver:12000._p2pchat._tcp.local port 12000 on webserver.local" \
  "\"fp=$FINGERPRINT\"" "A webserver.local $SERVER_IP" \
  "mDNS goodbye: service webserver:12000._p2pchat._tcp.local withdrawn"; do
  grep -qF -- "$label" "$OUT/discovery.txt" || die "p2pchat-trace shows no \"$label\" in discovery.pcap (discovery.txt)"
done
# ---- end of finding the server -------------------------------------------------------------------------

# ---- the answers --------------------------------------------------------------------------------
if command -v editcap >/dev/null 2>&1; then
  editcap -F pcapng "$OUT/newclient.pcap" "$OUT/newclient.pcapng"
fi
printf '%s\n' "$DIRECT_1" "$DIRECT_2" >"$OUT/direct-messages.txt"
NAMES=(--name "$SERVER_IP=webserver" --name "${IP[client1]}=client1" --name "${IP[client2]}=client2" --name "${IP[client3]}=client3"
  --name "$DNS_IP=dns")

"$TRACE" handshakes "$OUT/chatserver.pcap" --json >"$OUT/handshakes-chatserver.json"
"$TRACE" udp "$OUT/client1.pcap" --json >"$OUT/udp-client1.json"
# The course's notebook (Milestone 2) checks eight integers, under exactly these names:
# check_progress.test_4_1(SYN_sequence_number, SYNACK_sequence_number, SYNACK_ACKnowledgement_number)
# and test_4_2(number_of_fields_in_UDP_header, length_of_header_field,
# maximum_number_of_bytes_in_UDP_payload, largest_possible_source_port_number, protocol_number_for_UDP).
# answers.py holds them, each with the packet or the reason it comes from, for a student to paste;
# `just lab-check` checks it against tshark.
hs=$(jq -e --arg c "${IP[client1]}" '[.handshakes[] | select(.client | startswith($c + ":"))] | first' \
  "$OUT/handshakes-chatserver.json") || die "no handshake of client1 in chatserver.pcap"
jq -r '"# The lab\u0027s answers to the notebook\u0027s Milestone 2 checks (just lab, \($out)); paste into the notebook.",
  "# test_4_1: client1\u0027s first connection to the server, in chatserver.pcap (absolute numbers, as tshark",
  "# shows them with tcp.relative_sequence_numbers off).",
  "SYN_sequence_number = \($hs.syn_seq)  # packet \($hs.syn_packet), the SYN \($hs.client) -> \($hs.server)",
  "SYNACK_sequence_number = \($hs.syn_ack_seq)  # packet \($hs.syn_ack_packet), the SYN-ACK: the server\u0027s own initial number",
  "SYNACK_ACKnowledgement_number = \($hs.syn_ack_ack)  # packet \($hs.syn_ack_packet): the SYN\u0027s seq + 1",
  "# test_4_2: the UDP header (RFC 768), as in the direct message of client1.pcap packet \(.dm.packet): \(.dm.header_hex)",
  "number_of_fields_in_UDP_header = \(.a.header_fields | length)  # source port, destination port, length, checksum",
  "length_of_header_field = \(.a.header_fields[0].bytes)  # bytes each (16 bits), 8 bytes in all",
  "maximum_number_of_bytes_in_UDP_payload = \(.a.max_payload_udp_length_field)  # 65,535 (the 16-bit length field, which counts the 8-byte header) - 8; over IPv4 at most \(.a.max_payload_ipv4), its 20-byte header off too",
  "largest_possible_source_port_number = \(.a.max_port)  # 2^16 - 1: ports are 16-bit",
  "protocol_number_for_UDP = \(.a.protocol_number)  # the IPv4 header\u0027s protocol field, packet \(.a.protocol_number_packet) of client1.pcap"' \
  --argjson hs "$hs" --arg out "$OUT" <(jq '{a: .answers, dm: .answers.direct_message}' "$OUT/udp-client1.json") \
  >"$OUT/answers.py"
# The report's diagram: the server's interface and client1's, merged into one timeline.
MERGED=("$OUT/newclient-chatserver.pcap" "$OUT/newclient.pcap")
"$TRACE" diagram "${MERGED[@]}" "${NAMES[@]}" >"$OUT/diagram.mmd"
"$TRACE" diagram "${MERGED[@]}" "${NAMES[@]}" --format text >"$OUT/diagram.txt"
"$TRACE" diagram "${MERGED[@]}" "${NAMES[@]}" --format svg >"$OUT/diagram.svg"
"$TRACE" diagram "${MERGED[@]}" "${NAMES[@]}" --json >"$OUT/diagram.json"
"$TRACE" diagram "$OUT/client1.pcap" "${NAMES[@]}" >"$OUT/diagram-client1.mmd"
{
  echo "# The lab's answers, from the captures in $OUT"
  echo
  echo "## 1. TCP: client1's three-way handshakes with the server (chatserver.pcap, absolute numbers)"
  "$TRACE" handshakes "$OUT/chatserver.pcap" --host "${IP[client1]}"
  echo
  echo "## 2. UDP: the datagrams client1 sent and received (client1.pcap)"
  "$TRACE" udp "$OUT/client1.pcap"
  echo
  echo "## 3. Every packet when a new client connects and sends one direct message"
  echo "(newclient-chatserver.pcap, the server's eth0, and newclient.pcap, client1's, merged: each packet once)"
  cat "$OUT/diagram.txt"
} >"$OUT/answers.txt"
cat "$OUT/answers.txt"

# The direct messages went peer to peer: in client1's capture, never in the server's.
for text in "$DIRECT_1" "$DIRECT_2"; do
  grep -qaF -- "$text" "$OUT/client1.pcap" || die "\"$text\" is not in client1's capture"
  if grep -qaF -- "$text" "$OUT/chatserver.pcap"; then die "\"$text\" is in the server's capture"; fi
done
grep -qaF -- "$DIRECT_2" "$OUT/newclient.pcap" || die "the second direct message is not in newclient.pcap"

# ---- the merged diagram: what the report's picture must show -------------------------------------
# Arrow numbers (jq over diagram.json) of the first step matching a jq condition; "" if none.
first_step() { jq -r "[.steps[] | select($1) | .number] | first // empty" "$OUT/diagram.json"; }
participant() { jq -r --arg ip "$1" '[.participants[].ip] | index($ip)' "$OUT/diagram.json"; }
C1=$(participant "${IP[client1]}") C2=$(participant "${IP[client2]}") C3=$(participant "${IP[client3]}")
DNS=$(participant "$DNS_IP") SRV=$(participant "$SERVER_IP")
query=$(first_step ".dns != null and (.dns.response | not) and .from == $C1 and .dns.questions[0].name == \"$SERVER_NAME\" and .dns.questions[0].qtype == 1")
answer=$(first_step ".dns != null and .dns.response and .to == $C1 and ([.dns.answers[] | select(.rtype == 1) | .data] == [\"$SERVER_IP\"])")
syn=$(first_step ".label | test(\"\\\\[SYN\\\\]\")")
login=$(first_step "(.messages | index(\"login\")) != null")
welcome=$(first_step "(.messages | index(\"welcome\")) != null")
[ -n "$query" ] && [ -n "$answer" ] || die "the diagram has no DNS query for $SERVER_NAME (A) and answer $SERVER_IP from client1"
[ "$DNS" != null ] && [ "$query" -lt "$answer" ] && [ "$answer" -lt "$syn" ] ||
  die "the DNS query ($query) and answer ($answer) do not come before the SYN ($syn)"
for c in "$C2" "$C3"; do
  joined=$(first_step ".from == $SRV and .to == $c and (.messages | index(\"joined\")) != null")
  [ -n "$joined" ] || die "the diagram has no joined from the server to participant $c"
  acked=$(first_step ".from == $c and .to == $SRV and .number > $joined and (.label | test(\"\\\\[ACK\\\\]\"))")
  [ -n "$acked" ] || die "the joined to participant $c ($joined) is not acknowledged in the diagram"
  left=$(first_step ".from == $SRV and .to == $c and (.messages | index(\"left\")) != null")
  [ -n "$left" ] || die "the diagram has no left from the server to participant $c"
done
# The login does not lock the server: bob's room message and its fan-out cross between the new
# client's login and its welcome (the hash, at the default cost, runs off the broker's task).
between=$(jq -r --argjson a "$login" --argjson b "$welcome" --argjson c1 "$C1" \
  '[.steps[] | select(.number > $a and .number < $b and .from != $c1 and .to != $c1 and (.messages | length) > 0)] | length' \
  "$OUT/diagram.json")
[ "$between" -gt 0 ] || die "no other client's message crossed between login ($login) and welcome ($welcome)"
jq -r --argjson a "$login" --argjson b "$welcome" '.steps as $s |
  "   login (\($s[$a - 1].time * 1000 | floor) ms) to welcome (\($s[$b - 1].time * 1000 | floor) ms): '"$between"' other message(s) in between"' \
  "$OUT/diagram.json"
# ---- end of the merged diagram ---------------------------------------------------------------------

# ---- what an eavesdropper sees (the encrypted run against the plaintext one) ----------------------
# The same three secrets, looked for in the raw bytes of each capture (what anyone on the LAN
# records): in the plaintext run the password and the room text cross to the server and the
# direct message goes client1 -> client2; in the encrypted run none of them may appear anywhere.
# Each line: what, text, then present/absent in chatserver.pcap, client1.pcap,
# encrypted-chatserver.pcap, encrypted-client1.pcap.
EAVESDROPPER=(
  "password|alice-password|present present absent absent"
  "room text|hello room, alice here|present present absent absent"
  "direct message|$DIRECT_1|absent present absent absent"
)
EAVES_FILES=(chatserver client1 encrypted-chatserver encrypted-client1)
: >"$OUT/secrets.txt"
{
  printf '%-15s %-50s' "what" "text"
  for f in "${EAVES_FILES[@]}"; do printf ' %-25s' "$f.pcap"; done
  echo
  for row in "${EAVESDROPPER[@]}"; do
    IFS='|' read -r what text expected <<<"$row"
    printf '%s\t%s\t%s\n' "$what" "$text" "$expected" >>"$OUT/secrets.txt"
    printf '%-15s %-50s' "$what" "\"$text\""
    seen=()
    for f in "${EAVES_FILES[@]}"; do
      if grep -qaF -- "$text" "$OUT/$f.pcap"; then seen+=(present); else seen+=(absent); fi
      printf ' %-25s' "${seen[-1]}"
    done
    echo
    [ "${seen[*]}" = "$expected" ] ||
      die "$what \"$text\": expected ($expected) in (${EAVES_FILES[*]}), found (${seen[*]})"
  done
} >"$OUT/eavesdropper.txt"

# The analyser names what the encrypted capture carries instead of calling it garbage: TLS records
# (a ClientHello, a ServerHello, application data) and sealed datagrams (a message and its
# acknowledgement), and no p2pchat line or clear direct message.
# The default mode's merged diagram (the server's interface and client1's, as for the plaintext
# one): what differs from the report's picture, drawn (the TLS handshake, the records, the sealed
# direct message and its acknowledgement).
ENCRYPTED=("$OUT/encrypted-chatserver.pcap" "$OUT/encrypted-client1.pcap")
"$TRACE" diagram "${ENCRYPTED[@]}" "${NAMES[@]}" >"$OUT/diagram-encrypted.mmd"
"$TRACE" diagram "${ENCRYPTED[@]}" "${NAMES[@]}" --format text >"$OUT/diagram-encrypted.txt"
"$TRACE" diagram "${ENCRYPTED[@]}" "${NAMES[@]}" --format svg >"$OUT/diagram-encrypted.svg"
"$TRACE" diagram "${ENCRYPTED[@]}" "${NAMES[@]}" --json >"$OUT/diagram-encrypted.json"
for label in "TLS handshake ClientHello" "TLS handshake ServerHello" "TLS application_data" \
  "sealed direct message from key id" "sealed acknowledgement from key id"; do
  grep -qF -- "$label" "$OUT/diagram-encrypted.txt" || die "p2pchat-trace shows no \"$label\" in the encrypted run's diagram"
done
if grep -qF "(not p2pchat)" "$OUT/diagram-encrypted.txt"; then
  die "p2pchat-trace calls part of the encrypted run's captures \"not p2pchat\""
fi
clear=$(jq -r '[.steps[].messages[]] | join(" ")' "$OUT/diagram-encrypted.json")
[ -z "$clear" ] || die "p2pchat-trace reads clear p2pchat messages in the encrypted run: $clear"
{
  echo
  echo "## 4. The encrypted run (the default mode): what an eavesdropper sees"
  echo
  echo "The same password, room text and direct message, looked for in each capture's bytes:"
  echo
  cat "$OUT/eavesdropper.txt"
  echo
  echo "### client1's handshake with the TLS server (encrypted-chatserver.pcap)"
  "$TRACE" handshakes "$OUT/encrypted-chatserver.pcap" --host "${IP[client1]}"
  echo
  echo "### The sealed datagrams (encrypted-client1.pcap)"
  "$TRACE" udp "$OUT/encrypted-client1.pcap"
  echo
  echo "### Every packet of the encrypted run (encrypted-chatserver.pcap and encrypted-client1.pcap, merged: each packet once)"
  cat "$OUT/diagram-encrypted.txt"
} >>"$OUT/answers.txt"
{
  echo
  echo "## 5. Finding the server on the LAN: mDNS (discovery.pcap, client1's eth0)"
  echo
  echo "The course's DNS lookup above asks the lab's DNS server for chat.lab by name. Without a name, the server"
  echo "announces itself by multicast DNS (DNS-SD, _p2pchat._tcp) and a client started without --server asks the"
  echo "LAN who offers it. The UDP datagrams of that capture (to 224.0.0.251:5353; the TCP of the client that"
  echo "then joined is left out here):"
  echo
  grep -E '^ *[0-9]+ .*mDNS|^packet' "$OUT/discovery.txt"
} >>"$OUT/answers.txt"
sed -n '/^## 4\./,$p' "$OUT/answers.txt"
# ---- end of what an eavesdropper sees --------------------------------------------------------------

END=$(date +%s.%N)
echo
say "done in $(awk -v a="$START" -v b="$END" 'BEGIN { printf "%.1f", b - a }') s"
echo "captures: $OUT/chatserver.pcap (Ethernet), $OUT/client1.pcap (Linux cooked), $OUT/newclient.pcap$([ -f "$OUT/newclient.pcapng" ] && echo " and .pcapng")"
echo "notebook: $OUT/answers.py (the eight answers the course's check_progress.test_4_1 and test_4_2 take)"
echo "answers:  $OUT/answers.txt; diagram (server's and client1's captures merged): $OUT/diagram.mmd (Mermaid),"
echo "          $OUT/diagram.txt, $OUT/diagram.svg (the report's picture: just report)"
echo "both direct messages are in client1's capture and absent from the server's"
echo "encrypted run: $OUT/encrypted-chatserver.pcap, $OUT/encrypted-client1.pcap; the password, the room text and"
echo "          the direct message are in the plaintext captures and in neither encrypted one ($OUT/eavesdropper.txt)"
echo "          its merged diagram: $OUT/diagram-encrypted.svg (.mmd, .txt, .json)"
echo "discovery: $OUT/discovery.pcap, the server's mDNS announcement and a client finding it ($OUT/discovery.txt)"
