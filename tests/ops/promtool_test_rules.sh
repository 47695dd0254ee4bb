#!/usr/bin/env bash
# promtool test rules on every rules/tests/*.test.yml.
# Usage: promtool_test_rules.sh <source root> <promtool>
set -euo pipefail
root=$1 promtool=$2
shopt -s nullglob
tests=("$root"/rules/tests/*.test.yml)
if [ ${#tests[@]} -eq 0 ]; then
  echo "no rules/tests/*.test.yml found under $root" >&2
  exit 1
fi
"$promtool" test rules "${tests[@]}"
