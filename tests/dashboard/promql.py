"""A small PromQL parser for linting Grafana dashboard queries.

It understands the PromQL that dashboards use (selectors, range selectors,
subqueries, function calls, aggregations, binary operators with matching
modifiers, offset/@) and keeps Grafana template variables (`$job`,
`${__rate_interval}`) as they are, so rules can ask "does this range use
$__rate_interval?" on the query as written.

It is not the authority on validity: the dashboard test sends every query to a
real Prometheus for that. This parser only has to build the right tree for
queries Prometheus accepts, and to raise PromQLSyntaxError on anything it does
not understand rather than guess.
"""

import dataclasses
import re
from typing import Iterator, List, Optional, Tuple


class PromQLSyntaxError(ValueError):
    """The expression is not PromQL this parser understands."""


AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
    "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
# Aggregations whose first argument is a parameter, not the vector.
PARAMETRISED_AGGREGATIONS = {"count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}

# Binary operator precedence, lowest first; `^` is right-associative.
PRECEDENCE = {
    "or": 1,
    "and": 2, "unless": 2,
    "==": 3, "!=": 3, "<=": 3, "<": 3, ">=": 3, ">": 3,
    "+": 4, "-": 4,
    "*": 5, "/": 5, "%": 5, "atan2": 5,
    "^": 6,
}
SET_OPERATORS = {"and", "or", "unless"}


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


# --- tokenizer --------------------------------------------------------------

_DURATION_UNIT = r"(?:ms|s|m|h|d|w|y)"
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<duration>(?:\d+""" + _DURATION_UNIT + r""")+)(?![\w.])
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<variable>\$\{[^}\s]+\}|\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(){}\[\],:@])
    """,
    re.VERBOSE,
)


@dataclasses.dataclass
class Token:
    kind: str
    text: str
    pos: int


def tokenize(expr: str) -> List[Token]:
    tokens = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if not m:
            raise PromQLSyntaxError(f"unexpected character {expr[pos]!r} at offset {pos}")
        kind = m.lastgroup
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(Token("eof", "", len(expr)))
    return tokens


def _unquote(text: str) -> str:
    body = text[1:-1]
    if text[0] == "`":
        return body
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


# --- parser -----------------------------------------------------------------

class _Parser:
    def __init__(self, expr: str):
        self.expr = expr
        self.tokens = tokenize(expr)
        self.i = 0

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        token = self.peek()
        self.i += 1
        return token

    def error(self, message: str) -> PromQLSyntaxError:
        token = self.peek()
        return PromQLSyntaxError(f"{message} at offset {token.pos} (near {token.text or 'end of input'!r})")

    def expect(self, text: str) -> Token:
        if self.peek().text != text:
            raise self.error(f"expected {text!r}")
        return self.next()

    def at_keyword(self, *words: str) -> bool:
        token = self.peek()
        return token.kind == "ident" and token.text.lower() in words

    def parse(self) -> Node:
        node = self.expression(0)
        if self.peek().kind != "eof":
            raise self.error("unexpected trailing input")
        return node

    def binary_operator(self) -> Optional[str]:
        token = self.peek()
        if token.kind == "op" and token.text in PRECEDENCE:
            return token.text
        if token.kind == "ident" and token.text.lower() in ("and", "or", "unless", "atan2"):
            return token.text.lower()
        return None

    def expression(self, min_precedence: int) -> Node:
        lhs = self.unary()
        while True:
            op = self.binary_operator()
            if op is None or PRECEDENCE[op] < min_precedence:
                return lhs
            self.next()
            node = BinaryExpr(op, lhs, NumberLiteral("0"))
            self.binary_modifiers(node)
            next_min = PRECEDENCE[op] if op == "^" else PRECEDENCE[op] + 1
            node.rhs = self.expression(next_min)
            lhs = node

    def binary_modifiers(self, node: BinaryExpr) -> None:
        if self.at_keyword("bool"):
            self.next()
            node.return_bool = True
        if self.at_keyword("on", "ignoring"):
            node.matching = self.next().text.lower()
            node.matching_labels = self.label_list()
            if self.at_keyword("group_left", "group_right"):
                node.group = self.next().text.lower()
                if self.peek().text == "(":
                    node.group_labels = self.label_list()

    def label_list(self) -> List[str]:
        self.expect("(")
        labels = []
        while self.peek().text != ")":
            token = self.next()
            if token.kind == "string":
                labels.append(_unquote(token.text))
            elif token.kind == "ident":
                labels.append(token.text)
            else:
                raise PromQLSyntaxError(f"expected a label name at offset {token.pos}, got {token.text!r}")
            if self.peek().text == ",":
                self.next()
            elif self.peek().text != ")":
                raise self.error("expected ',' or ')' in label list")
        self.expect(")")
        return labels

    def unary(self) -> Node:
        token = self.peek()
        if token.kind == "op" and token.text in ("+", "-"):
            self.next()
            # Unary minus binds tighter than any binary operator except ^.
            return UnaryExpr(token.text, self.expression(PRECEDENCE["^"]))
        return self.postfix(self.primary())

    def duration(self) -> str:
        token = self.next()
        if token.kind in ("duration", "variable", "number"):
            return token.text
        raise PromQLSyntaxError(f"expected a duration at offset {token.pos}, got {token.text!r}")

    def postfix(self, node: Node) -> Node:
        while True:
            token = self.peek()
            if token.text == "[":
                self.next()
                range_ = self.duration()
                if self.peek().text == ":":
                    self.next()
                    step = None if self.peek().text == "]" else self.duration()
                    self.expect("]")
                    node = Subquery(node, range_, step)
                else:
                    self.expect("]")
                    if not isinstance(node, Selector) or node.range is not None:
                        raise PromQLSyntaxError(
                            f"range [{range_}] at offset {token.pos} applies only to a plain vector selector")
                    node.range = range_
            elif self.at_keyword("offset"):
                self.next()
                sign = self.next().text if self.peek().text in ("-", "+") else ""
                offset = sign + self.duration()
                if isinstance(node, Selector):
                    node.offset = offset
            elif token.text == "@":
                self.next()
                if self.peek().kind == "ident":  # start() / end()
                    self.next()
                    self.expect("(")
                    self.expect(")")
                else:
                    self.next()
            else:
                return node

    def primary(self) -> Node:
        token = self.peek()
        if token.kind in ("number", "duration"):
            self.next()
            return NumberLiteral(token.text)
        if token.kind == "string":
            self.next()
            return StringLiteral(_unquote(token.text))
        if token.text == "(":
            self.next()
            inner = self.expression(0)
            self.expect(")")
            return ParenExpr(inner)
        if token.text == "{":
            return self.selector(None)
        if token.kind == "ident":
            name = token.text
            lowered = name.lower()
            following = self.peek(1).text
            if lowered in AGGREGATIONS and (following == "(" or self.peek(1).text.lower() in ("by", "without")):
                return self.aggregation()
            if following == "(":
                return self.call()
            if lowered in ("inf", "nan") and following != "{":
                self.next()
                return NumberLiteral(name)
            self.next()
            return self.selector(name)
        raise self.error("expected an expression")

    def selector(self, name: Optional[str]) -> Selector:
        matchers = []
        if self.peek().text == "{":
            self.next()
            while self.peek().text != "}":
                label = self.next()
                if label.kind not in ("ident", "string"):
                    raise PromQLSyntaxError(f"expected a label name at offset {label.pos}, got {label.text!r}")
                op = self.next()
                if op.text not in ("=", "!=", "=~", "!~"):
                    raise PromQLSyntaxError(f"expected a label matcher operator at offset {op.pos}, got {op.text!r}")
                value = self.next()
                if value.kind != "string":
                    raise PromQLSyntaxError(f"expected a quoted label value at offset {value.pos}, got {value.text!r}")
                label_name = _unquote(label.text) if label.kind == "string" else label.text
                matchers.append(Matcher(label_name, op.text, _unquote(value.text)))
                if self.peek().text == ",":
                    self.next()
                elif self.peek().text != "}":
                    raise self.error("expected ',' or '}' in label matchers")
            self.expect("}")
        if name is None:
            for m in matchers:
                if m.label == "__name__" and m.op == "=":
                    name = m.value
        if name is None and not matchers:
            raise self.error("a selector needs a metric name or a matcher")
        return Selector(name, matchers)

    def call(self) -> Call:
        func = self.next().text
        self.expect("(")
        args = []
        while self.peek().text != ")":
            args.append(self.expression(0))
            if self.peek().text == ",":
                self.next()
            elif self.peek().text != ")":
                raise self.error(f"expected ',' or ')' in arguments of {func}()")
        self.expect(")")
        return Call(func, args)

    def aggregation(self) -> Aggregation:
        op = self.next().text.lower()
        node = Aggregation(op, NumberLiteral("0"))
        if self.at_keyword("by", "without"):
            self.grouping(node)
        self.expect("(")
        first = self.expression(0)
        if op in PARAMETRISED_AGGREGATIONS:
            self.expect(",")
            node.param = first
            node.expr = self.expression(0)
        else:
            node.expr = first
        self.expect(")")
        if self.at_keyword("by", "without"):
            if node.has_grouping:
                raise self.error(f"{op} has two grouping clauses")
            self.grouping(node)
        return node

    def grouping(self, node: Aggregation) -> None:
        node.without = self.next().text.lower() == "without"
        node.has_grouping = True
        node.grouping = self.label_list()


def parse(expr: str) -> Node:
    """Parses `expr` (Grafana variables allowed) into a tree of Nodes."""
    return _Parser(expr).parse()
