#!/usr/bin/env bash
# The long fuzzing run: every property test of the entry decoder and of the
# canonical key with a million cases each (release build), then its result
# into the "Fuzzing" section of RELIABILITY.md.
#
#   scripts/fuzz-long.sh            # 1 000 000 cases per property
#   scripts/fuzz-long.sh 50000      # another count
#   FUZZ_LONG_PROFILE=test scripts/fuzz-long.sh 20000
#                                   # the test build (no release build)
#   FUZZ_LONG_SECONDS=3600 scripts/fuzz-long.sh
#                                   # stop after an hour (after the build)
#   FUZZ_LONG_TESTS="fuzz_decode fuzz_keys" scripts/fuzz-long.sh
#                                   # these test files only, in this order
#
# With a time limit, a property still running when it is reached is
# stopped, and it and those after it are reported as not finished: only
# properties that ran every case count as passed. The cheap test files run
# first.
#
# The normal test run (scripts/test.sh) runs the same properties with
# proptest's default of 256 cases. Needs no Redis. On a 2-core machine
# shared with other work, expect hours for a million; run it under
# `nice -n 19` there.
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-1000000}
profile=${FUZZ_LONG_PROFILE:-release}
limit=${FUZZ_LONG_SECONDS:-0}
read -r -a tests <<< "${FUZZ_LONG_TESTS:-fuzz_keys fuzz_decode_alloc fuzz_decode}"
args=(-p cached-redis-tests)
for t in "${tests[@]}"; do args+=(--test "$t"); done

echo "fuzz-long.sh: building ($profile)" >&2
cargo test --profile "$profile" "${args[@]}" --no-run >&2

log=$(mktemp)
names=$(mktemp)
trap 'rm -f "$log" "$names"' EXIT
started=$(date +%s)
status=0
stopped=""
for t in "${tests[@]}"; do
  cargo test --profile "$profile" -p cached-redis-tests --test "$t" -- --list 2>/dev/null \
    | sed -n 's/: test$//p' >> "$names"
  run=()
  if [ "$limit" != 0 ]; then
    left=$(( started + limit - $(date +%s) ))
    if [ "$left" -le 0 ]; then stopped=1; continue; fi
    run=(timeout "$left")
  fi
  # One test thread: the allocation test measures per thread anyway, and
  # the properties then run one after the other with the whole machine.
  rc=0
  PROPTEST_CASES=$cases "${run[@]}" cargo test --profile "$profile" -p cached-redis-tests --test "$t" -- --test-threads 1 2>&1 \
    | tee -a "$log" >&2 || rc=$?
  if [ "$rc" = 124 ] && [ "$limit" != 0 ]; then
    stopped=1
  elif [ "$rc" != 0 ]; then
    status=$rc
  fi
done
seconds=$(( $(date +%s) - started ))

passed=$(grep -c '\.\.\. ok$' "$log" || true)
failed=$(grep -c '\.\.\. FAILED$' "$log" || true)
total=$(wc -l < "$names")
unfinished=$(( total - passed - failed ))
verdict="all $passed passed"
[ "$status" = 0 ] || verdict="$failed FAILED, $passed passed (see the test output for the minimal failing input)"
if [ -n "$stopped" ]; then
  verdict="stopped at the time limit ($limit s): $passed of $total properties and tests passed with every case, $failed failed, $unfinished did not finish (the cases they ran are not counted)"
fi
command="scripts/fuzz-long.sh $cases"
[ "$limit" = 0 ] || command="FUZZ_LONG_SECONDS=$limit $command"
[ "$profile" = release ] || command="FUZZ_LONG_PROFILE=$profile $command"
[ -z "${FUZZ_LONG_TESTS:-}" ] || command="FUZZ_LONG_TESTS=\"${tests[*]}\" $command"
section=$(
  echo "<!-- fuzz-long:begin -->"
  echo "Last long run: $(date -u '+%Y-%m-%d %H:%M UTC'), \`$command\`: $cases cases per property, \`$profile\` build, $seconds s on $(nproc) cores (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)); $verdict."
  echo
  echo "| test | result |"
  echo "| --- | --- |"
  while read -r name; do
    result=$(grep -E "^test $name \.\.\. (ok|FAILED)$" "$log" | sed -E 's/.* \.\.\. //' | head -1)
    echo "| \`$name\` | ${result:-not finished} |"
  done < "$names"
  echo
  echo "The properties (\`cached-redis-tests/tests/fuzz_decode.rs\`, \`cached-redis-tests/tests/fuzz_decode_alloc.rs\`, \`cached-redis-tests/tests/fuzz_keys.rs\`): valid entries of every codec read back equal; random bytes, a valid header before random bytes, entries of another type and randomly edited entries (bit flips, overwritten bytes and length fields, truncation, insertion, removal, repeated runs) decode or are refused, never panic; entries over \`max_value_bytes\` are refused; decoding holds at most \`max_value_bytes\` plus 64 KiB of its own (counted by a global allocator; a decoded string or byte buffer adds at most its payload, twice with JSON's scratch copy of an escaped string; a JSON entry of the wrong type, whose error serde_json builds quoting the payload, at most 14 × \`max_value_bytes\` in all: see docs/FORMAT.md), zlib and LZ4 bombs and lying lengths included; two arguments share a key exactly when they are equal (random nested types over every scalar kind, maps in any order, floats bit for bit), and NaN and infinities are refused."
  echo "<!-- fuzz-long:end -->"
)
if [ -f RELIABILITY.md ] && grep -q '<!-- fuzz-long:begin -->' RELIABILITY.md; then
  SECTION="$section" python3 - <<'PY'
import os, re
p = "RELIABILITY.md"
s = open(p).read()
s = re.sub(r"<!-- fuzz-long:begin -->.*?<!-- fuzz-long:end -->", lambda _: os.environ["SECTION"], s, flags=re.S)
open(p, "w").write(s)
PY
else
  printf '# Reliability\n\n## Fuzzing\n\n%s\n' "$section" >> RELIABILITY.md
fi
echo "fuzz-long.sh: $verdict in $seconds s; RELIABILITY.md updated" >&2
exit "$status"
