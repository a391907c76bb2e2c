#!/usr/bin/env bash
# bench/sql-bench-chart.sh RESULT.md OUT.png — draws the per-round claim throughput of a
# bench/sql-bench.sh output (pix_stream_next vs the SKIP LOCKED baseline, one pair of bars per round,
# which ran first in the label) with gnuplot (scripts/deps.sh --test installs gnuplot-nox). The title
# carries the output's own stamp (date, commit, clean or not).
set -euo pipefail
in=${1:?usage: sql-bench-chart.sh RESULT.md OUT.png}
out=${2:?usage: sql-bench-chart.sh RESULT.md OUT.png}
command -v gnuplot >/dev/null || { echo "sql-bench-chart.sh: gnuplot not found" >&2; exit 1; }
dat=$(mktemp)
trap 'rm -f "$dat"' EXIT
# | round | ran first | pix msg/s | baseline msg/s | ratio |
awk -F'|' '/^\| [0-9]+ \| (pix|baseline) \|/ {gsub(/ /, ""); printf "\"%s (%s first)\" %s %s\n", $2, $3, $4, $5}' "$in" >"$dat"
[[ -s "$dat" ]] || { echo "sql-bench-chart.sh: no round rows in $in" >&2; exit 1; }
stamp=$(sed -n '1s/^# pix SQL benchmark — //p' "$in")
term='set terminal pngcairo size 900,500 font "DejaVu Sans,11"'
gnuplot -e "$term" 2>/dev/null || term='set terminal png size 900,500'
gnuplot <<GP
$term
set output "$out"
set title "Claim throughput, 6 collectors on one ISPB, batches of 10\n$stamp" noenhanced
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set ylabel "messages/s"
set yrange [0:*]
set key top right
set grid ytics
plot "$dat" using 2:xtic(1) title "pix\\\\_stream\\\\_next", "" using 3 title "SKIP LOCKED baseline (partial index)"
GP
