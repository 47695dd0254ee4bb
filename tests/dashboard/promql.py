"""PromQL trees for linting Grafana dashboard queries.

Parsing is done by the Prometheus project's own PromQL grammar
(@prometheus-io/lezer-promql from npm, pinned in promql_parser/), run by
promql_parser/promql_tree.mjs in one long-lived Node.js process. This module
turns its output into the small dataclass tree the linter walks, and keeps
Grafana template variables (`$job`, `${__rate_interval}`) as written, so rules
can ask "does this range use $__rate_interval?" on the query as written.

Validity with the series that exist is still checked by sending every query to
a real Prometheus; this grammar already rejects unknown functions and malformed
expressions.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
from typing import Any, Dict, Iterator, List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "lib"))
import loopback  # noqa: E402


class PromQLSyntaxError(ValueError):
    """The expression is not PromQL this parser understands."""


@dataclasses.dataclass
class Node:
    def children(self) -> List["Node"]:
        return []


@dataclasses.dataclass
class NumberLiteral(Node):
    text: str


@dataclasses.dataclass
class StringLiteral(Node):
    value: str


@dataclasses.dataclass
class Matcher:
    label: str
    op: str  # =, !=, =~, !~
    value: str


@dataclasses.dataclass
class Selector(Node):
    """`name{matchers}` with an optional `[range]` (then a range vector)."""

    name: Optional[str]
    matchers: List[Matcher]
    range: Optional[str] = None  # the duration as written: "5m", "$__rate_interval"
    offset: Optional[str] = None

    def matcher(self, label: str) -> Optional[Matcher]:
        for m in self.matchers:
            if m.label == label:
                return m
        return None


@dataclasses.dataclass
class Subquery(Node):
    expr: Node
    range: str
    step: Optional[str]

    def children(self):
        return [self.expr]


@dataclasses.dataclass
class Call(Node):
    func: str
    args: List[Node]

    def children(self):
        return list(self.args)


@dataclasses.dataclass
class Aggregation(Node):
    op: str
    expr: Node
    param: Optional[Node] = None
    grouping: List[str] = dataclasses.field(default_factory=list)
    without: bool = False
    has_grouping: bool = False  # a `by ()` clause was written, even if empty

    def children(self):
        return ([self.param] if self.param is not None else []) + [self.expr]


@dataclasses.dataclass
class BinaryExpr(Node):
    op: str
    lhs: Node
    rhs: Node
    return_bool: bool = False
    matching: Optional[str] = None  # "on" or "ignoring"
    matching_labels: List[str] = dataclasses.field(default_factory=list)
    group: Optional[str] = None  # "group_left" or "group_right"
    group_labels: List[str] = dataclasses.field(default_factory=list)

    def children(self):
        return [self.lhs, self.rhs]


@dataclasses.dataclass
class UnaryExpr(Node):
    op: str
    expr: Node

    def children(self):
        return [self.expr]


@dataclasses.dataclass
class ParenExpr(Node):
    expr: Node

    def children(self):
        return [self.expr]


def walk(node: Node, parents: Tuple[Node, ...] = ()) -> Iterator[Tuple[Node, Tuple[Node, ...]]]:
    """Yields every node with the tuple of its ancestors (outermost first)."""
    yield node, parents
    for child in node.children():
        yield from walk(child, parents + (node,))


# --- parsing ----------------------------------------------------------------

PARSER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "promql_parser")
# A Grafana variable outside a string: $name, ${name} or ${name:format}.
_VARIABLE = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`|\$\{[^}\s]+\}|\$[A-Za-z_]\w*')
_PLACEHOLDER_BASE = 7_340_000  # numbers no dashboard writes, standing in for variables
_parser: Optional[subprocess.Popen] = None


def _substitute_variables(expr: str) -> Tuple[str, Dict[str, str]]:
    """Replaces variables with numbers (durations inside [...]) the grammar accepts."""
    originals: Dict[str, str] = {}

    def replace(m: "re.Match[str]") -> str:
        if m.group()[0] != "$":
            return m.group()  # a string literal: variables inside stay as written
        in_brackets = expr.rfind("[", 0, m.start()) > expr.rfind("]", 0, m.start())
        placeholder = f"{_PLACEHOLDER_BASE + len(originals)}{'s' if in_brackets else ''}"
        originals[placeholder] = m.group()
        return placeholder

    return _VARIABLE.sub(replace, expr), originals


def _build(data: Any, originals: Dict[str, str]) -> Any:
    """Dataclasses from the parser's JSON, with variables restored."""
    if isinstance(data, list):
        return [_build(item, originals) for item in data]
    if isinstance(data, str):
        return originals.get(data, data)
    if not isinstance(data, dict):
        return data
    fields = {k: _build(v, originals) for k, v in data.items() if k != "kind"}
    if "kind" not in data:
        return Matcher(**fields)
    return _NODE_TYPES[data["kind"]](**fields)


_NODE_TYPES = {cls.__name__: cls for cls in (NumberLiteral, StringLiteral, Selector, Subquery, Call,
                                              Aggregation, BinaryExpr, UnaryExpr, ParenExpr)}


def _parser_process() -> subprocess.Popen:
    global _parser
    if _parser is None or _parser.poll() is not None:
        loopback.ensure_npm_packages(PARSER_DIR, "@prometheus-io/lezer-promql")
        _parser = subprocess.Popen(["node", os.path.join(PARSER_DIR, "promql_tree.mjs")], cwd=PARSER_DIR,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return _parser


def parse(expr: str) -> Node:
    """Parses `expr` (Grafana variables allowed) into a tree of Nodes."""
    source, originals = _substitute_variables(expr)
    process = _parser_process()
    process.stdin.write(json.dumps(source) + "\n")
    process.stdin.flush()
    answer = json.loads(process.stdout.readline())
    if "error" in answer:
        raise PromQLSyntaxError(answer["error"])
    return _build(answer["tree"], originals)
