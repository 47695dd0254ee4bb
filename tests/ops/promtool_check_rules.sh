#!/usr/bin/env bash
# promtool check rules on the shipped rules file, with every lint enabled and
# lint findings fatal. Usage: promtool_check_rules.sh <source root> <promtool>
set -euo pipefail
root=$1 promtool=$2
"$promtool" check rules --lint=all --lint-fatal "$root/rules/codebase-mcp-pool.yml"
