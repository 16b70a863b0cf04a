#!/usr/bin/env bash
# Checks the report `just report` rendered (target/lab/report.pdf, or LAB_OUT/report.pdf): at most
# two A4 pages; the sequence diagram's picture in it (its DNS, joined and left arrows and the time
# beside every arrow, extracted from the PDF's text: WeasyPrint draws SVG text as text); and the
# handshake numbers of the capture it was made from (client1's first SYN and SYN-ACK in
# chatserver.pcap, as p2pchat-trace reads them now).
#
# Usage: bash ci/report-check.sh [LAB_OUT]   Needs pdfinfo and pdftotext (poppler-utils), jq.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "ci/report-check.sh: $*" >&2; exit 1; }
for tool in pdfinfo pdftotext jq; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (apt-get install poppler-utils jq; bash ci/install.sh installs them)"
done
LAB=${1:-target/lab}
PDF=$LAB/report.pdf
[ -f "$PDF" ] || die "$PDF is missing: run just report"
TRACE=${LAB_BIN:-target/debug}/p2pchat-trace
MAX_PAGES=2   # the course asks for fewer than two pages, diagram included

info=$(pdfinfo "$PDF")
pages=$(awk '/^Pages:/ { print $2 }' <<<"$info")
[ "$pages" -ge 1 ] && [ "$pages" -le "$MAX_PAGES" ] || die "$PDF has $pages pages; at most $MAX_PAGES"
size=$(awk -F': *' '/^Page size:/ { print $2 }' <<<"$info")
case $size in *"595.2"*" x 841.8"*) ;; *) die "$PDF is not A4: $size" ;; esac

text=$(pdftotext -layout "$PDF" -)
flat=$(tr -d ' \n' <<<"$text")
has() { grep -qF -- "$(tr -d ' \n' <<<"$1")" <<<"$flat" || die "$PDF does not contain \"$1\""; }

# The picture: arrows only the diagram has, with the time beside each.
d=$LAB/diagram.json
has "DNS query A chat.lab"
has "$(jq -r '[.steps[] | select(.dns != null and .dns.response)] | first | .label | sub("^.*? DNS "; "DNS ")' "$d")"
for what in joined left welcome login direct; do
  n=$(jq -r --arg m "$what" '[.steps[] | select((.messages | index($m)) != null)] | length' "$d")
  got=$(grep -o "len=[0-9]* $what\b" <<<"$text" | wc -l)
  [ "$got" -ge "$n" ] || die "$PDF shows $got arrow(s) carrying $what; the diagram has $n"
done
for host in "client2 10.20.30.12" "client3 10.20.30.13" "webserver 10.20.30.3"; do
  has "${host% *}"; has "${host#* }"
done
last=$(jq -r '.steps | last | "+\(.time * 1000 | floor / 1000)"' "$d")
grep -qE '\+[0-9]+\.[0-9]{3} s' <<<"$text" || die "$PDF has no arrow times (+0.000 s)"

# The UDP answers as the notebook checks them (65,527: the UDP length field's limit), and the
# encrypted run's diagram named.
has "largest payload 65,527 bytes"
has "diagram-encrypted.svg"

# The handshake numbers of the capture it was made from.
hs=$("$TRACE" handshakes "$LAB/chatserver.pcap" --host 10.20.30.11 --json | jq -e '.handshakes[0]')
for k in syn_seq syn_ack_seq syn_ack_ack; do
  has "$(jq -r ".$k" <<<"$hs")"
done
echo "ok: $PDF — $pages A4 page(s), the diagram (DNS, $(jq '.steps | length' "$d") arrows, last at $last s), SYN seq $(jq .syn_seq <<<"$hs"), SYN-ACK seq $(jq .syn_ack_seq <<<"$hs") ack $(jq .syn_ack_ack <<<"$hs")"
