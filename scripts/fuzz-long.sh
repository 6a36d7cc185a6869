#!/usr/bin/env bash
# The long fuzzing run: every property test of the entry decoder and of the
# canonical key with a million cases each (release build), then its result
# into the "Fuzzing" section of RELIABILITY.md.
#
#   scripts/fuzz-long.sh            # 1 000 000 cases per property
#   scripts/fuzz-long.sh 50000      # another count
#   FUZZ_LONG_PROFILE=test scripts/fuzz-long.sh 20000
#                                   # the test build (no release build)
#
# The normal test run (scripts/test.sh) runs the same properties with
# proptest's default of 256 cases. Needs no Redis. On a 2-core machine
# shared with other work, expect hours for a million; run it under
# `nice -n 19` there.
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-1000000}
profile=${FUZZ_LONG_PROFILE:-release}
tests=(fuzz_decode fuzz_decode_alloc fuzz_keys)
args=(-p cached-redis-tests)
for t in "${tests[@]}"; do args+=(--test "$t"); done

echo "fuzz-long.sh: building ($profile)" >&2
cargo test --profile "$profile" "${args[@]}" --no-run >&2

log=$(mktemp)
trap 'rm -f "$log"' EXIT
started=$(date +%s)
status=0
# One test thread: the allocation test measures per thread anyway, and the
# properties then run one after the other with the whole machine.
PROPTEST_CASES=$cases cargo test --profile "$profile" "${args[@]}" -- --test-threads 1 2>&1 | tee "$log" >&2 \
  || status=$?
seconds=$(( $(date +%s) - started ))

passed=$(grep -c '\.\.\. ok$' "$log" || true)
failed=$(grep -c '\.\.\. FAILED$' "$log" || true)
verdict="all $passed passed"
[ "$status" = 0 ] || verdict="$failed FAILED, $passed passed (see the test output for the minimal failing input)"
section=$(
  echo "<!-- fuzz-long:begin -->"
  echo "Last long run: $(date -u '+%Y-%m-%d %H:%M UTC'), \`scripts/fuzz-long.sh $cases\`: $cases cases per property, \`$profile\` build, $seconds s on $(nproc) cores (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)); $verdict."
  echo
  echo "| test | result |"
  echo "| --- | --- |"
  grep -E '^test .* \.\.\. (ok|FAILED)$' "$log" | sed -E 's/^test (.*) \.\.\. (ok|FAILED)$/| `\1` | \2 |/'
  echo
  echo "The properties (\`cached-redis-tests/tests/fuzz_decode.rs\`, \`cached-redis-tests/tests/fuzz_decode_alloc.rs\`, \`cached-redis-tests/tests/fuzz_keys.rs\`): valid entries of every codec read back equal; random bytes, a valid header before random bytes, entries of another type and randomly edited entries (bit flips, overwritten bytes and length fields, truncation, insertion, removal, repeated runs) decode or are refused, never panic; entries over \`max_value_bytes\` are refused; decoding holds at most \`max_value_bytes\` plus 64 KiB of its own (counted by a global allocator; a decoded string or byte buffer adds at most its payload), zlib bombs and lying lengths included; two arguments share a key exactly when they are equal (random nested types over every scalar kind, maps in any order, floats bit for bit), and NaN and infinities are refused."
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
