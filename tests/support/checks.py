"""What the checks of the shipped files (tests/ops, tests/deploy) share: reading
their YAML, the command line `<check> <source root> [tool ...]`, and the
report (a FAIL line each on stderr, exit 1; else one line and exit 0).
stack.py reads the files it makes test copies of with load_yaml too.

Needs Debian's python3-yaml (the tests run /usr/bin/python3). Scripts outside
tests/support put this folder on sys.path first.
"""

import pathlib
import sys
from typing import Any, List, Sequence

import yaml

# The shipped files, relative to the source root.
RULES = pathlib.PurePath("rules", "codebase-mcp-pool.yml")
ALERTMANAGER_CONFIG = pathlib.PurePath("rules", "alertmanager.yml")


def load_yaml(path) -> Any:
    """The YAML document in the UTF-8 file at `path`."""
    return yaml.safe_load(pathlib.Path(path).read_text(encoding="utf-8"))


def load_rules(root) -> Any:
    """rules/codebase-mcp-pool.yml of the source tree at `root`."""
    return load_yaml(pathlib.Path(root) / RULES)


def command_line(argv: Sequence[str], usage: str, count: int) -> List[Any]:
    """The `count` arguments of a check: the source root first, as a resolved
    path, then the rest as given. Any other number: prints `usage` and exits 2."""
    if len(argv) != count:
        print(usage, file=sys.stderr)
        raise SystemExit(2)
    return [pathlib.Path(argv[0]).resolve(), *argv[1:]]


def report(failures: Sequence[str], success: str) -> int:
    """The check's exit status: 1 after a FAIL line on stderr for each
    failure, else 0 after printing `success`."""
    for message in failures:
        print(f"FAIL: {message}", file=sys.stderr)
    if failures:
        return 1
    print(success)
    return 0
