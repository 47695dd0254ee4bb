// Reads PromQL expressions, one JSON string per line on stdin, and writes one
// JSON line per expression: {"tree": node} or {"error": message}. A node is
// {"kind": ..., fields} as the dashboard linter's promql.py dataclasses expect.
// The grammar is the Prometheus project's own (@prometheus-io/lezer-promql),
// so an unknown function or a malformed selector is an error here already.
import { createInterface } from "node:readline";
import { parser } from "@prometheus-io/lezer-promql";

class SyntaxError_ extends Error {}

function children(node) {
  const out = [];
  for (let c = node.firstChild; c; c = c.nextSibling) out.push(c);
  return out;
}

function firstError(node) {
  let found = null;
  node.cursor().iterate((n) => {
    if (found) return false;
    if (n.type.isError) found = n.from;
  });
  return found;
}

function convert(src) {
  const text = (n) => src.slice(n.from, n.to);
  const unquote = (s) => (s[0] === "`" ? s.slice(1, -1) : JSON.parse(s[0] === "'" ? `"${s.slice(1, -1).replace(/"/g, '\\"')}"` : s));
  const labels = (grouping) => children(grouping).map((l) => (l.name === "LabelName" ? text(l) : unquote(text(l))));

  function expr(n) {
    switch (n.name) {
      case "PromQL":
        return expr(children(n)[0]);
      case "NumberDurationLiteral":
        return { kind: "NumberLiteral", text: text(n) };
      case "StringLiteral":
        return { kind: "StringLiteral", value: unquote(text(n)) };
      case "ParenExpr":
        return { kind: "ParenExpr", expr: expr(children(n)[0]) };
      case "UnaryExpr": {
        const [op, operand] = children(n);
        return { kind: "UnaryExpr", op: text(op), expr: expr(operand) };
      }
      case "VectorSelector":
        return selector(n);
      case "MatrixSelector": {
        const [vector, range] = children(n);
        return { ...expr(vector), range: text(range) };
      }
      case "SubqueryExpr": {
        const [inner, range, step] = children(n);
        return { kind: "Subquery", expr: expr(inner), range: text(range), step: step ? text(step) : null };
      }
      case "OffsetExpr": {
        const parts = children(n);
        const inner = expr(parts[0]);
        if (inner.kind === "Selector") inner.offset = text(n).slice(parts[1].to - n.from).trim();
        return inner;
      }
      case "StepInvariantExpr":
        return expr(children(n)[0]);
      case "FunctionCall": {
        const [ident, body] = children(n);
        return { kind: "Call", func: text(ident), args: children(body).map(expr) };
      }
      case "AggregateExpr":
        return aggregation(n);
      case "BinaryExpr":
        return binary(n);
      default:
        throw new SyntaxError_(`unsupported ${n.name} ${JSON.stringify(text(n))} at offset ${n.from}`);
    }
  }

  function selector(n) {
    let name = null;
    const matchers = [];
    for (const part of children(n)) {
      if (part.name === "Identifier") name = text(part);
      if (part.name !== "LabelMatchers") continue;
      for (const m of children(part)) {
        if (m.name === "QuotedLabelName") {  // {"metric.name"}
          name = unquote(text(m));
          continue;
        }
        const [label, op, value] = children(m);
        const labelName = label.name === "LabelName" ? text(label) : unquote(text(label));
        matchers.push({ label: labelName, op: text(op), value: unquote(text(value)) });
      }
    }
    if (name === null) {
      const byName = matchers.find((m) => m.label === "__name__" && m.op === "=");
      if (byName) name = byName.value;
    }
    return { kind: "Selector", name, matchers, range: null, offset: null };
  }

  function aggregation(n) {
    const node = { kind: "Aggregation", op: "", expr: null, param: null, grouping: [], without: false, has_grouping: false };
    for (const part of children(n)) {
      if (part.name === "AggregateOp") node.op = text(part).toLowerCase();
      if (part.name === "AggregateModifier") {
        const [which, grouping] = children(part);
        node.without = which.name === "Without";
        node.has_grouping = true;
        node.grouping = labels(grouping);
      }
      if (part.name === "FunctionCallBody") {
        const args = children(part).map(expr);
        node.expr = args[args.length - 1];
        if (args.length > 1) node.param = args[0];
      }
    }
    return node;
  }

  function binary(n) {
    const parts = children(n);
    const node = {
      kind: "BinaryExpr", op: text(parts[1]).toLowerCase(), lhs: expr(parts[0]), rhs: expr(parts[parts.length - 1]),
      return_bool: false, matching: null, matching_labels: [], group: null, group_labels: [],
    };
    for (const part of parts.slice(2, -1)) {
      if (part.name === "BoolModifier") node.return_bool = true;
      if (part.name !== "MatchingModifierClause") continue;
      const modifiers = children(part);
      for (let i = 0; i < modifiers.length; i++) {
        const m = modifiers[i];
        const following = modifiers[i + 1];
        const list = following && following.name === "GroupingLabels" ? labels(following) : [];
        if (m.name === "On" || m.name === "Ignoring") {
          node.matching = text(m).toLowerCase();
          node.matching_labels = list;
        } else if (m.name === "GroupLeft" || m.name === "GroupRight") {
          node.group = text(m).toLowerCase();
          node.group_labels = list;
        }
      }
    }
    return node;
  }

  return expr;
}

function parse(src) {
  const top = parser.parse(src).topNode;
  const errorAt = firstError(top);
  if (errorAt !== null) {
    const near = src.slice(errorAt, errorAt + 12) || "end of input";
    return { error: `syntax error at offset ${errorAt} (near ${JSON.stringify(near)})` };
  }
  if (!top.firstChild) return { error: "empty expression" };
  try {
    return { tree: convert(src)(top) };
  } catch (e) {
    if (e instanceof SyntaxError_) return { error: e.message };
    throw e;
  }
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  process.stdout.write(JSON.stringify(parse(JSON.parse(line))) + "\n");
});
