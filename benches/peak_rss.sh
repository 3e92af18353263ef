#!/bin/sh
# Peak anonymous and file-backed resident memory of a command, sampled every 50 ms from
# /proc/<pid>/status (Linux). ru_maxrss / VmHWM lump both together, which hides what a
# memory-mapped checkpoint saves: its pages are file-backed, reclaimable page cache.
#
#   benches/peak_rss.sh target/release/autoqat eval --model DIR --text FILE --device cpu
set -u
[ $# -ge 1 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
"$@" >/dev/null 2>&1 &
pid=$!
peak_anon=0
peak_file=0
while kill -0 "$pid" 2>/dev/null; do
  anon=$(awk '/^RssAnon/{print $2}' "/proc/$pid/status" 2>/dev/null)
  file=$(awk '/^RssFile/{print $2}' "/proc/$pid/status" 2>/dev/null)
  [ -n "$anon" ] && [ "$anon" -gt "$peak_anon" ] && peak_anon=$anon
  [ -n "$file" ] && [ "$file" -gt "$peak_file" ] && peak_file=$file
  sleep 0.05
done
wait "$pid"
rc=$?
echo "peak RssAnon $((peak_anon / 1024)) MB, peak RssFile $((peak_file / 1024)) MB (exit $rc)"
