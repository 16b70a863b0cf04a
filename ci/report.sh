#!/usr/bin/env bash
# `just report`: the course's PDF report, from the lab's own run. Fills docs/report/report.html's
# fields (in double at signs) with the numbers of the captures in target/lab/ (or the folder given), with the
# merged sequence diagram that `p2pchat-trace diagram --format svg` drew (target/lab/diagram.svg)
# as its picture, and renders it with WeasyPrint into target/lab/report.pdf (at most two A4
# pages) and each page to PNG (report-1.png, report-2.png); then ci/report-check.sh checks them.
#
# Why WeasyPrint: Debian 12 packages it (apt-get install weasyprint: ~60 small packages, under a
# minute), it lays out HTML and CSS for print (A4, page numbers) and draws SVG itself, so neither
# a LaTeX distribution (hundreds of MB) nor a browser (Mermaid, wkhtmltopdf) is needed.
#
# Usage: bash ci/report.sh [LAB_OUT]   (after `just lab`; default target/lab)
# Needs weasyprint, jq, and pdfinfo/pdftotext (poppler-utils) for the check; ci/install.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "ci/report.sh: $*" >&2; exit 1; }
command -v weasyprint >/dev/null 2>&1 || die "weasyprint is not installed (apt-get install weasyprint; bash ci/install.sh installs it)"
command -v jq >/dev/null 2>&1 || die "jq is not installed"
command -v pdftoppm >/dev/null 2>&1 || die "pdftoppm is not installed (apt-get install poppler-utils; bash ci/install.sh installs it)"

LAB=${1:-target/lab}
for f in chatserver.pcap udp-client1.json diagram.json diagram.svg users.json; do
  [ -f "$LAB/$f" ] || die "$LAB/$f is missing: run just lab first"
done
if [ -n "${LAB_BIN:-}" ]; then
  TRACE=$LAB_BIN/p2pchat-trace
else
  cargo build --locked --quiet --bin p2pchat-trace
  TRACE=$PWD/target/debug/p2pchat-trace
fi
CLIENT1=10.20.30.11

declare -A V
V[LAB_DIR]=$LAB
# Client1's first connection, as the server's interface saw it.
hs=$("$TRACE" handshakes "$LAB/chatserver.pcap" --host "$CLIENT1" --json | jq -e '.handshakes[0]') ||
  die "no handshake of client1 in $LAB/chatserver.pcap"
for k in syn_seq syn_packet syn_ack_seq syn_ack_ack syn_ack_packet ack_packet; do
  V[${k^^}]=$(jq -r ".$k" <<<"$hs")
done
V[SYNACK_SEQ]=${V[SYN_ACK_SEQ]} V[SYNACK_ACK]=${V[SYN_ACK_ACK]} V[SYNACK_PACKET]=${V[SYN_ACK_PACKET]}
# The first direct message in client1's capture.
dm=$(jq -e '.answers.direct_message' "$LAB/udp-client1.json") || die "no direct message in $LAB/udp-client1.json"
V[UDP_PACKET]=$(jq -r .packet <<<"$dm")
V[UDP_HEADER]=$(jq -r .header_hex <<<"$dm")
V[UDP_SRC]=$(jq -r '.src | split(":") | last' <<<"$dm")
V[UDP_DST]=$(jq -r '.dst | split(":") | last' <<<"$dm")
V[UDP_LEN]=$(jq -r .length <<<"$dm")
V[UDP_PAYLOAD]=$(jq -r .payload_len <<<"$dm")
V[UDP_CHECKSUM]=$(jq -r '"0x" + (.header_hex | split(" ") | .[6:8] | join(""))' <<<"$dm")
# The report calls it correct, as Wireshark does: the lab captures with checksum offload off.
[ "$(jq -r .checksum_valid <<<"$dm")" = true ] ||
  die "the direct message's UDP checksum ${V[UDP_CHECKSUM]} is not correct in $LAB/client1.pcap (captured with checksum offload on?)"
# The merged diagram: the DNS lookup, the SYN, login and welcome, and what crossed in between.
d=$LAB/diagram.json
step() { jq -r "[.steps[] | select($1)] | first | $2" "$d"; }
V[DNS_QUERIES]=$(jq -r '[.steps[] | select(.dns != null and (.dns.response | not)) | .number | tostring] | join(", ")' "$d")
V[DNS_ANSWER]=$(step '.dns != null and .dns.response and ([.dns.answers[] | select(.rtype == 1)] | length) > 0' '.label | sub("^.*? DNS "; "DNS ")')
V[DNS_ANSWER_N]=$(step '.dns != null and .dns.response and ([.dns.answers[] | select(.rtype == 1)] | length) > 0' '.number')
V[SYN_N]=$(step '.label | test("\\[SYN\\]")' '.number')
V[LOGIN_N]=$(step '(.messages | index("login")) != null' '.number')
V[WELCOME_N]=$(step '(.messages | index("welcome")) != null' '.number')
V[LOGIN_S]=$(step '(.messages | index("login")) != null' '.time * 1000 | round / 1000')
V[WELCOME_S]=$(step '(.messages | index("welcome")) != null' '.time * 1000 | round / 1000')
V[HASH_MS]=$(jq -rn --argjson a "${V[LOGIN_S]}" --argjson b "${V[WELCOME_S]}" '($b - $a) * 1000 | round')
client1=$(jq -r --arg ip "$CLIENT1" '[.participants[].ip] | index($ip)' "$d")
V[BETWEEN]=$(jq -r --argjson a "${V[LOGIN_N]}" --argjson b "${V[WELCOME_N]}" --argjson c "$client1" \
  '[.steps[] | select(.number > $a and .number < $b and .from != $c and .to != $c and (.messages | length) > 0)] | length' "$d")
V[ARROWS]=$(jq -r '.steps | length' "$d")
# The users file: its first account, and how many more.
V[USERS]=$(jq -r '(.users | length) as $n | {version, users: [.users[0]]} | tostring
  | sub("\\]\\}$"; ", … \($n - 1) more ]}") | gsub(",\"users\":\\["; ",\n \"users\": [\n  ") | gsub("\\},"; "},\n  ")
  | gsub("\"password_hash\""; "\n   \"password_hash\"")' "$LAB/users.json")

for k in "${!V[@]}"; do
  [ -n "${V[$k]}" ] && [ "${V[$k]}" != null ] || die "no value for @@$k@@ in $LAB"
done
shopt -u patsub_replacement 2>/dev/null || true
html=$(<docs/report/report.html)
for k in "${!V[@]}"; do html=${html//@@$k@@/${V[$k]}}; done
left=$(grep -o '@@[A-Z_0-9]*@@' <<<"$html" | sort -u | tr '\n' ' ' || true)
[ -z "$left" ] || die "docs/report/report.html names fields this script does not fill: $left"
printf '%s\n' "$html" >"$LAB/report.html"
weasyprint --quiet "$LAB/report.html" "$LAB/report.pdf" || die "weasyprint failed"
# Each page as a picture at 100 % (96 dpi): what a TA sees on paper, to look at without a PDF
# viewer; ci/report-check.sh checks there is one per page (and the text size, from the PDF).
rm -f "$LAB"/report-*.png
pdftoppm -r 96 -png "$LAB/report.pdf" "$LAB/report" || die "pdftoppm failed"
echo "ci/report.sh: $LAB/report.pdf, pages as $LAB/report-N.png"
bash ci/report-check.sh "$LAB"
