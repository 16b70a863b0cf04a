#!/usr/bin/env bash
# Checks p2pchat-trace's answers against tshark's on the same capture files: packet counts, every
# SYN and SYN-ACK (absolute sequence and acknowledgement numbers), every UDP header, the diagram's
# arrows per protocol, every TLS record (content type, version, length, handshake types) and every
# sealed datagram's header, every DNS query and answer (name, type, A records), every mDNS message
# (the questions' and records' names, the TTLs); that the lab's
# DNS server answered client1's query for the server's name before the first SYN; that the lab's direct messages are in a UDP datagram from client1 to
# client2 and nowhere in the server's capture; the notebook's eight answers (answers.py); and what an eavesdropper finds in each capture (the
# password, room text and direct message of both runs: in the plaintext captures, in no encrypted one).
#
# Usage: bash ci/lab-check.sh [OUT]            the captures of a `just lab` run (default target/lab)
#        bash ci/lab-check.sh --files FILE...   any captures (the committed fixtures, say)
# Needs tshark and jq (.ci/run installs both). Uses the p2pchat-trace in target/debug, built if
# missing, or $LAB_BIN/p2pchat-trace.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "ci/lab-check.sh: $*" >&2; exit 1; }
command -v tshark >/dev/null 2>&1 || die "tshark is not installed (bash .ci/run installs it)"
command -v jq >/dev/null 2>&1 || die "jq is not installed (bash .ci/run installs it)"

if [ -n "${LAB_BIN:-}" ]; then
  TRACE=$LAB_BIN/p2pchat-trace
else
  cargo build --locked --quiet --bin p2pchat-trace
  TRACE=$PWD/target/debug/p2pchat-trace
fi

OUT=""
if [ "${1:-}" = "--files" ]; then
  shift
  FILES=("$@")
else
  OUT=${1:-target/lab}
  [ -d "$OUT" ] || die "$OUT does not exist: run just lab first"
  FILES=()
  for f in "$OUT"/*.pcap "$OUT"/*.pcapng; do [ -e "$f" ] && FILES+=("$f"); done
fi
[ "${#FILES[@]}" -gt 0 ] || die "no capture files to check"

TMP=$(mktemp -d /tmp/p2plab-check.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# tshark with absolute sequence numbers; its banner about running as root goes to a log.
tshark_fields() { # FILE FILTER FIELD...
  local file=$1 filter=$2; shift 2
  local args=()
  for field in "$@"; do args+=(-e "$field"); done
  tshark -r "$file" -n -o tcp.relative_sequence_numbers:FALSE -Y "$filter" -T fields \
    -E separator=' ' "${args[@]}" 2>"$TMP/tshark.err" || { cat "$TMP/tshark.err" >&2; die "tshark failed on $file"; }
}

# Compares two files of lines; prints the difference and fails when they differ.
same() { # WHAT EXPECTED(tshark) ACTUAL(p2pchat-trace)
  if ! diff -u --label "tshark" --label "p2pchat-trace" "$2" "$3" >"$TMP/diff"; then
    cat "$TMP/diff" >&2
    die "$1: p2pchat-trace and tshark disagree"
  fi
}

TLS_PORT=12000   # the server's port in the lab and in the committed captures
ENDPOINT='capture("^\\[?(?<ip>.*?)\\]?:(?<port>[0-9]+)$")'
CHECKED=0
for file in "${FILES[@]}"; do
  name=$(basename "$file")

  tshark_fields "$file" "" frame.number | wc -l | tr -d ' ' >"$TMP/count.tshark"
  "$TRACE" count "$file" >"$TMP/count.trace"
  same "$name: number of packets" "$TMP/count.tshark" "$TMP/count.trace"

  # Every SYN and SYN-ACK: frame, source, destination, absolute seq (and ack for the SYN-ACK).
  tshark_fields "$file" "tcp.flags.syn == 1" frame.number ip.src tcp.srcport ip.dst tcp.dstport \
      tcp.flags.ack tcp.seq tcp.ack |
    awk '{ if ($6 == "1" || $6 == "True") print $1, $2, $3, $4, $5, "SYN-ACK", $7, $8;
           else print $1, $2, $3, $4, $5, "SYN", $7 }' | sort -n >"$TMP/syn.tshark"
  "$TRACE" handshakes "$file" --json | jq -r "
    .handshakes[] | (.client | $ENDPOINT) as \$c | (.server | $ENDPOINT) as \$s |
    \"\(.syn_packet) \(\$c.ip) \(\$c.port) \(\$s.ip) \(\$s.port) SYN \(.syn_seq)\",
    (select(.syn_ack_packet != null) |
     \"\(.syn_ack_packet) \(\$s.ip) \(\$s.port) \(\$c.ip) \(\$c.port) SYN-ACK \(.syn_ack_seq) \(.syn_ack_ack)\")" |
    sort -n >"$TMP/syn.trace"
  same "$name: SYN and SYN-ACK numbers" "$TMP/syn.tshark" "$TMP/syn.trace"
  # ack = SYN seq + 1, as tshark's numbers say, for every handshake p2pchat-trace calls complete.
  "$TRACE" handshakes "$file" --json |
    jq -e '[.handshakes[] | select(.syn_ack_ack != null) |
            (.ack_is_syn_seq_plus_one == (.syn_ack_ack == ((.syn_seq + 1) % 4294967296)))] | all' >/dev/null ||
    die "$name: ack_is_syn_seq_plus_one is wrong"

  # Every UDP header: frame, source, destination, length, checksum, IP protocol; payload = length - 8.
  tshark_fields "$file" "udp" frame.number ip.src udp.srcport ip.dst udp.dstport udp.length \
      udp.checksum ip.proto | sort -n >"$TMP/udp.tshark"
  "$TRACE" udp "$file" --json | jq -r "
    .datagrams[] | (.src | $ENDPOINT) as \$s | (.dst | $ENDPOINT) as \$d |
    if .payload_len != .length - 8 then error(\"payload \(.payload_len) != length - 8 in packet \(.packet)\") else . end |
    \"\(.packet) \(\$s.ip) \(\$s.port) \(\$d.ip) \(\$d.port) \(.length) 0x\(.checksum | [. / 4096 % 16, . / 256 % 16, . / 16 % 16, . % 16] | map(floor | \"0123456789abcdef\"[.:.+1]) | join(\"\")) \(.ip_protocol)\"" |
    sort -n >"$TMP/udp.trace"
  same "$name: UDP headers" "$TMP/udp.tshark" "$TMP/udp.trace"
  if [ -s "$TMP/udp.trace" ]; then
    "$TRACE" udp "$file" --json | jq -e '.answers.protocol_number == 17 and .answers.max_payload_ipv4 == 65507
      and .answers.max_payload_udp_length_field == 65527 and .answers.max_port == 65535' >/dev/null ||
      die "$name: the UDP answers are wrong"
  fi

  # The diagram has one arrow per TCP, UDP and ARP packet between two hosts (not multicast or
  # broadcast, not from 0.0.0.0).
  unicast='!(ip.dst == 224.0.0.0/4) && ip.dst != 255.255.255.255 && ip.src != 0.0.0.0'
  for proto in tcp udp arp; do
    filter=$proto
    [ "$proto" = arp ] || filter="$proto && $unicast"
    tshark_fields "$file" "$filter" frame.number | tr '\n' ' ' >"$TMP/arrows-$proto.tshark"
    "$TRACE" diagram "$file" --json |
      jq -r --arg p "${proto^^}" '[.steps[] | select(.protocol == $p) | .packet | tostring] | join(" ")' |
      tr -d '\n' >"$TMP/arrows-$proto.trace"
    sed -i 's/ $//' "$TMP/arrows-$proto.tshark"
    same "$name: $proto packets in the diagram" "$TMP/arrows-$proto.tshark" "$TMP/arrows-$proto.trace"
  done
  # Every packet's time since the first, to the microsecond (pcapng resolutions included).
  tshark_fields "$file" "" frame.number frame.time_relative |
    awk '{ printf "%d %d\n", $1, $2 * 1000000 + 0.5 }' >"$TMP/time.tshark"
  "$TRACE" diagram "$file" --json | jq -r '.steps[] | "\(.packet) \(.time * 1000000 + 0.5 | floor)"' >"$TMP/time.trace"
  awk 'NR == FNR { tshark[$1] = $2; next }
       { n++; d = tshark[$1] - $2
         if (!($1 in tshark) || d < -1 || d > 1) { print "packet " $1 ": tshark " tshark[$1] " us, p2pchat-trace " $2 " us"; bad = 1 } }
       END { exit bad || n == 0 }' "$TMP/time.tshark" "$TMP/time.trace" >&2 || die "$name: packet times disagree"

  # ---- TLS records and sealed datagrams (the default mode) ----------------------------------------
  # Every TLS record, in order: frame, content type, record version, length, the handshake types
  # tshark sees in it. tshark decodes TLS on p2pchat's port with -d; an encrypted record's type is
  # its "opaque type". A record split over segments is in the frame that finishes it, for both.
  tshark -r "$file" -n -d "tcp.port==$TLS_PORT,tls" -Y tls -T json --no-duplicate-keys -J "frame tls" \
      2>"$TMP/tshark.err" >"$TMP/tls.json" || { cat "$TMP/tshark.err" >&2; die "tshark failed on $file"; }
  jq -r '.[]._source.layers as $l | $l.frame["frame.number"] as $n |
    ($l.tls | if type == "array" then . else [.] end) | .[] | .["tls.record"] |
    if type == "array" then .[] else . end | select(type == "object") |
    "\($n) \(.["tls.record.content_type"] // .["tls.record.opaque_type"]) \(.["tls.record.version"]) \(.["tls.record.length"]) \(
      (.["tls.handshake"] // []) | if type == "array" then . else [.] end |
      map(.["tls.handshake.type"] // empty) | if length == 0 then "-" else join(",") end)"' \
    "$TMP/tls.json" >"$TMP/tls.tshark"
  "$TRACE" diagram "$file" --json | jq -r '.steps[] | .packet as $n | .tls[] |
    "\($n) \(.content_type) \(.version) \(.length) \(if (.handshake_types | length) == 0 then "-" else (.handshake_types | map(tostring) | join(",")) end)"' \
    >"$TMP/tls.trace"
  same "$name: TLS records (type, version, length, handshake types)" "$TMP/tls.tshark" "$TMP/tls.trace"

  # Every sealed datagram's header, read by hand from tshark's UDP payload bytes: version 1, kind
  # 1 (message) or 2 (acknowledgement), at least 34 bytes; then key id, counter, the bytes after
  # the header.
  tshark_fields "$file" "udp" frame.number udp.payload | while read -r frame payload; do
    [ "${#payload}" -ge 68 ] || continue
    case ${payload:0:4} in 0101) kind=message ;; 0102) kind=acknowledgement ;; *) continue ;; esac
    printf '%s 1 %s %s %u %d\n' "$frame" "$kind" "${payload:4:16}" "$((16#${payload:20:16}))" $(( ${#payload} / 2 - 18 ))
  done >"$TMP/sealed.tshark"
  "$TRACE" udp "$file" --json | jq -r '.datagrams[] | select(.sealed != null) |
    "\(.packet) \(.sealed.version) \(.sealed.kind) \(.sealed.key_id) \(.sealed.counter) \(.sealed.sealed_bytes)"' \
    >"$TMP/sealed.trace"
  same "$name: sealed datagram headers" "$TMP/sealed.tshark" "$TMP/sealed.trace"
  # ---- end of TLS records and sealed datagrams -----------------------------------------------------

  # ---- DNS (the lab's lookup of chat.lab) ---------------------------------------------------------
  # Every DNS message: frame, response (1) or query (0), the questions' names and types, the A
  # records' addresses (tshark's dns.qry.name, dns.qry.type, dns.a; several values joined by commas).
  tshark_fields "$file" "dns" frame.number dns.flags.response dns.qry.name dns.qry.type dns.a |
    awk '{ $2 = ($2 == "1" || $2 == "True") ? 1 : 0; print }' | sed 's/ *$//' >"$TMP/dns.tshark"
  "$TRACE" diagram "$file" --json | jq -r '.steps[] | select(.dns != null) |
    "\(.packet) \(if .dns.response then 1 else 0 end) \(.dns.questions | map(.name) | join(",")) \(
      .dns.questions | map(.qtype | tostring) | join(",")) \([.dns.answers[] | select(.rtype == 1) | .data] | join(","))"' |
    sed 's/ *$//' >"$TMP/dns.trace"
  same "$name: DNS queries and answers (name, type, A records)" "$TMP/dns.tshark" "$TMP/dns.trace"
  # ---- end of DNS ----------------------------------------------------------------------------------
  # ---- mDNS (the server's announcement, a client looking for it) -----------------------------------
  # Every multicast DNS message: frame, response (1) or query (0), the questions' names, the
  # records' names in every section (tshark lists each name once), and every record's TTL (0: a
  # goodbye); an empty field leaves no gap on either side (awk rejoins the fields).
  tshark_fields "$file" "mdns" frame.number dns.flags.response dns.qry.name dns.resp.name dns.resp.ttl |
    awk '{ $2 = ($2 == "1" || $2 == "True") ? 1 : 0; print }' | sed 's/ *$//' >"$TMP/mdns.tshark"
  "$TRACE" udp "$file" --json | jq -r '.datagrams[] | select(.dns.mdns) | [.dns.answers[], (.dns.other_records // [])[]] as $r |
    "\(.packet) \(if .dns.response then 1 else 0 end) \(.dns.questions | map(.name) | join(",")) \(
      $r | map(.name) | reduce .[] as $n ([]; if any(.[]; . == $n) then . else . + [$n] end) | join(",")) \(
      $r | map(.ttl | tostring) | join(","))"' | awk '{ $1 = $1; print }' >"$TMP/mdns.trace"
  same "$name: mDNS queries and answers (names, TTLs)" "$TMP/mdns.tshark" "$TMP/mdns.trace"
  # ---- end of mDNS ---------------------------------------------------------------------------------

  echo "ok: $name — $(cat "$TMP/count.trace") packets, $(grep -c ' SYN ' "$TMP/syn.trace" || true) handshake(s), $(wc -l <"$TMP/udp.trace") UDP datagram(s), $(wc -l <"$TMP/tls.trace") TLS record(s), $(wc -l <"$TMP/sealed.trace") sealed datagram(s), $(wc -l <"$TMP/dns.trace") DNS message(s), $(wc -l <"$TMP/mdns.trace") mDNS message(s) agree with tshark"
  CHECKED=$((CHECKED + 1))
done

# The direct messages went peer to peer: in a UDP datagram from client1 to client2, never in the
# server's capture.
if [ -n "$OUT" ] && [ -f "$OUT/direct-messages.txt" ]; then
  while IFS= read -r text; do
    [ -n "$text" ] || continue
    quoted=${text//\"/\\\"}
    hits=$(tshark_fields "$OUT/client1.pcap" \
      "udp && ip.src == 10.20.30.11 && ip.dst == 10.20.30.12 && frame contains \"$quoted\"" frame.number | wc -l)
    [ "$hits" -ge 1 ] || die "\"$text\" is in no UDP datagram from client1 to client2 (client1.pcap)"
    leaks=$(tshark_fields "$OUT/chatserver.pcap" "frame contains \"$quoted\"" frame.number | wc -l)
    [ "$leaks" -eq 0 ] || die "\"$text\" is in $leaks packet(s) of the server's capture"
    echo "ok: \"$text\" — in $hits UDP datagram(s) client1 -> client2, in none of the server's packets"
  done <"$OUT/direct-messages.txt"
fi
# ---- the notebook's answers (ci/lab.sh's answers.py) against tshark's ------------------------------
# The eight names the course's notebook checks, each once as NAME = INTEGER: the handshake numbers
# are tshark's for client1's first SYN and its SYN-ACK in chatserver.pcap; the UDP answers are
# checked against the header tshark decodes in client1's first direct message (8 bytes = fields x
# field length; the largest port and the length field are field-length numbers; the length field
# counts the header) and its IP protocol field.
if [ -n "$OUT" ] && [ -f "$OUT/chatserver.pcap" ]; then
  PY=$OUT/answers.py
  [ -f "$PY" ] || die "$PY is missing: run just lab"
  declare -A ANSWER
  for name in SYN_sequence_number SYNACK_sequence_number SYNACK_ACKnowledgement_number \
    number_of_fields_in_UDP_header length_of_header_field maximum_number_of_bytes_in_UDP_payload \
    largest_possible_source_port_number protocol_number_for_UDP; do
    lines=$(grep -cE "^$name = [0-9]+( |$)" "$PY" || true)
    [ "$lines" -eq 1 ] || die "$PY: $name is assigned an integer on $lines line(s), not 1"
    ANSWER[$name]=$(sed -nE "s/^$name = ([0-9]+).*/\1/p" "$PY")
  done
  others=$(grep -vE '^(#|$)' "$PY" | grep -cvE "^($(IFS='|'; echo "${!ANSWER[*]}")) = " || true)
  [ "$others" -eq 0 ] || die "$PY has $others line(s) that are not one of the eight answers"
  expect() { # NAME VALUE(tshark's)
    [ "${ANSWER[$1]}" = "$2" ] || die "$PY: $1 = ${ANSWER[$1]}, tshark says $2"
  }
  read -r frame sport seq <<<"$(tshark_fields "$OUT/chatserver.pcap" \
    "tcp.flags.syn == 1 && tcp.flags.ack == 0 && ip.src == 10.20.30.11" frame.number tcp.srcport tcp.seq | head -n 1)"
  [ -n "${seq:-}" ] || die "chatserver.pcap: tshark finds no SYN from client1"
  expect SYN_sequence_number "$seq"
  read -r _ sa_seq sa_ack <<<"$(tshark_fields "$OUT/chatserver.pcap" \
    "tcp.flags.syn == 1 && tcp.flags.ack == 1 && ip.dst == 10.20.30.11 && tcp.dstport == $sport" frame.number tcp.seq tcp.ack | head -n 1)"
  [ -n "${sa_ack:-}" ] || die "chatserver.pcap: tshark finds no SYN-ACK to client1's first SYN (frame $frame)"
  expect SYNACK_sequence_number "$sa_seq"
  expect SYNACK_ACKnowledgement_number "$sa_ack"
  read -r _ udp_len payload proto <<<"$(tshark_fields "$OUT/client1.pcap" \
    "udp && ip.src == 10.20.30.11 && ip.dst == 10.20.30.12" frame.number udp.length udp.payload ip.proto | head -n 1)"
  [ -n "${proto:-}" ] || die "client1.pcap: tshark finds no datagram from client1 to client2"
  header=$(( udp_len - ${#payload} / 2 ))
  field=${ANSWER[length_of_header_field]}
  [ "$(( ANSWER[number_of_fields_in_UDP_header] * field ))" -eq "$header" ] ||
    die "$PY: ${ANSWER[number_of_fields_in_UDP_header]} fields of $field bytes, but tshark's UDP header is $header bytes"
  [ "$field" -eq 2 ] || die "$PY: length_of_header_field = $field; tshark's 16-bit fields are 2 bytes"
  largest=$(( (1 << (8 * field)) - 1 ))
  expect largest_possible_source_port_number "$largest"
  expect maximum_number_of_bytes_in_UDP_payload "$(( largest - header ))"
  expect protocol_number_for_UDP "$proto"
  echo "ok: answers.py — SYN seq $seq, SYN-ACK seq $sa_seq ack $sa_ack (chatserver.pcap frame $frame on), UDP $header-byte header, protocol $proto as tshark reads them"
fi
# ---- end of the notebook's answers ----------------------------------------------------------------

# ---- checksums: the lab captures with checksum offload off, so Wireshark finds every sum correct --
# (The committed fixtures were captured with offload on: their senders' sums are unfinished.)
if [ -n "$OUT" ]; then
  for file in "${FILES[@]}"; do
    bad=$(tshark -r "$file" -n -o udp.check_checksum:TRUE -o tcp.check_checksum:TRUE \
      -Y "udp.checksum.status == 0 || tcp.checksum.status == 0" -T fields -e frame.number 2>"$TMP/tshark.err" | tr '\n' ' ') ||
      { cat "$TMP/tshark.err" >&2; die "tshark failed on $file"; }
    [ -z "$bad" ] || die "$(basename "$file"): tshark finds incorrect TCP or UDP checksums in frame(s) $bad(checksum offload on?)"
  done
  echo "ok: every TCP and UDP checksum in the ${#FILES[@]} capture(s) is correct for tshark"
fi

# ---- the lab's DNS: client1 asked the lab's DNS server for each name and got its address ---------
# names.txt (from ci/lab.sh): NAME=ADDRESS, the zone dnsmasq answers. The new client's lookup of the
# server's name is in newclient.pcap: a query of type A and an answer with the address, by tshark.
if [ -n "$OUT" ] && [ -f "$OUT/names.txt" ] && [ -f "$OUT/newclient.pcap" ]; then
  IFS='=' read -r server_name server_ip <"$OUT/names.txt"
  q=$(tshark_fields "$OUT/newclient.pcap" "dns.flags.response == 0 && dns.qry.name == \"$server_name\" && dns.qry.type == 1 && ip.src == 10.20.30.11" frame.number | head -n 1)
  a=$(tshark_fields "$OUT/newclient.pcap" "dns.flags.response == 1 && dns.qry.name == \"$server_name\" && dns.a == $server_ip && ip.dst == 10.20.30.11" frame.number | head -n 1)
  syn=$(tshark_fields "$OUT/newclient.pcap" "tcp.flags.syn == 1 && tcp.flags.ack == 0" frame.number | head -n 1)
  [ -n "$q" ] && [ -n "$a" ] || die "newclient.pcap: tshark finds no DNS query for $server_name (A) and answer $server_ip"
  [ "$q" -lt "$a" ] && [ "$a" -lt "$syn" ] || die "newclient.pcap: the DNS query ($q) and answer ($a) are not before the SYN ($syn)"
  echo "ok: newclient.pcap — DNS query A $server_name (frame $q), answer $server_ip (frame $a), before the SYN (frame $syn)"
fi
# ---- end of the lab's DNS ---------------------------------------------------------------------------

# ---- what an eavesdropper sees (ci/lab.sh's secrets.txt: what, text, expected per capture) --------
# tshark's count of packets containing each secret, in the plaintext and the encrypted captures.
if [ -n "$OUT" ] && [ -f "$OUT/secrets.txt" ]; then
  EAVES_FILES=(chatserver client1 encrypted-chatserver encrypted-client1)
  while IFS=$'\t' read -r what text expected; do
    quoted=${text//\"/\\\"}
    seen=()
    for f in "${EAVES_FILES[@]}"; do
      hits=$(tshark_fields "$OUT/$f.pcap" "frame contains \"$quoted\"" frame.number | wc -l)
      if [ "$hits" -gt 0 ]; then seen+=(present); else seen+=(absent); fi
    done
    [ "${seen[*]}" = "$expected" ] ||
      die "$what \"$text\": expected ($expected) in (${EAVES_FILES[*]}), tshark finds (${seen[*]})"
    echo "ok: $what \"$text\" — ${EAVES_FILES[*]}: ${seen[*]}"
  done <"$OUT/secrets.txt"
fi
# ---- end of what an eavesdropper sees -------------------------------------------------------------
echo "ci/lab-check.sh: $CHECKED capture file(s) agree with tshark"
