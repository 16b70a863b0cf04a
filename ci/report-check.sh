#!/usr/bin/env bash
# Checks the report `just report` rendered (target/lab/report.pdf, or LAB_OUT/report.pdf): at most
# two A4 pages; the sequence diagram's picture in it (its DNS, joined and left arrows and the time
# beside every arrow, extracted from the PDF's text: WeasyPrint draws SVG text as text); and the
# handshake numbers of the capture it was made from (client1's first SYN and SYN-ACK in
# chatserver.pcap, as p2pchat-trace reads them now).
#
# Also: one PNG per page (ci/report.sh renders them), every word of the PDF at least 7 pt as
# printed, and the diagram's page filled to its lower quarter.
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

# The pages as pictures (ci/report.sh renders them with pdftoppm at 96 dpi, 100 %): one per page,
# A4 at 96 dpi is 794 x 1123 pixels (a PNG's width and height are bytes 16-23, big-endian).
for n in $(seq 1 "$pages"); do
  png=$LAB/report-$n.png
  [ -f "$png" ] && ! [ "$PDF" -nt "$png" ] || die "no picture of page $n (report-$n.png): run just report"
  dims=$(od -An -tu1 -j16 -N8 "$png" | awk '{ printf "%dx%d", $1*16777216 + $2*65536 + $3*256 + $4, $5*16777216 + $6*65536 + $7*256 + $8 }')
  [ "$dims" = 794x1123 ] || die "$png is $dims pixels, not A4 at 96 dpi (794x1123)"
done
[ ! -e "$LAB/report-$((pages + 1)).png" ] || die "$LAB/report-$((pages + 1)).png is from an older report"

# Text size, as printed: every word's box from the PDF (pdftotext -bbox, in points). DejaVu's
# ascent plus descent is 1.164 em, so a box's height over 1.164 is the word's font size. Every
# word on every page is at least MIN_PT (the diagram's labels and times included), and the
# diagram fills its page: its last row is in the page's lower quarter.
MIN_PT=7
FILL=0.75
pdftotext -bbox "$PDF" - | awk -v min="$MIN_PT" -v fill="$FILL" -v pages="$pages" '
  /<page / { page++; match($0, /height="[0-9.]+"/); height = substr($0, RSTART + 8, RLENGTH - 9) + 0; low[page] = 0 }
  /<word / {
    match($0, /yMin="[0-9.]+"/); y0 = substr($0, RSTART + 6, RLENGTH - 7) + 0
    match($0, /yMax="[0-9.]+"/); y1 = substr($0, RSTART + 6, RLENGTH - 7) + 0
    w = $0; sub(/^.*">/, "", w); sub(/<\/word>.*$/, "", w)
    size = (y1 - y0) / 1.164
    if (size < min - 0.05) { printf "page %d: \"%s\" is %.1f pt, under %s pt\n", page, w, size, min; bad = 1 }
    if (size < smallest || smallest == 0) smallest = size
    # the page footer is not the diagram
    if (w !~ /^(p2pchat,|Lab|4|—|page|of|[0-9]+)$/ && y1 > low[page]) low[page] = y1
    pageh[page] = height
  }
  END {
    if (low[pages] < fill * pageh[pages]) { printf "page %d: its last text is at %.0f of %.0f pt: the diagram leaves the page more than %d%% empty\n", pages, low[pages], pageh[pages], (1 - fill) * 100; bad = 1 }
    printf "text %.1f pt at the smallest; diagram page filled to %.0f%%\n", smallest, 100 * low[pages] / pageh[pages] > "/dev/stderr"
    exit bad
  }' >&2 2>"$LAB/report-size.txt" || die "the text of $PDF is too small to read at 100 %, or the diagram does not fill its page"
text_size=$(cat "$LAB/report-size.txt")

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
echo "ok: $PDF — $pages A4 page(s) ($text_size), the diagram (DNS, $(jq '.steps | length' "$d") arrows, last at $last s), SYN seq $(jq .syn_seq <<<"$hs"), SYN-ACK seq $(jq .syn_ack_seq <<<"$hs") ack $(jq .syn_ack_ack <<<"$hs")"
