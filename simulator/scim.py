"""The SCIM-like expressions Okta accepts in `filter` and `search`, parsed and evaluated.

Grammar (SCIM precedence: `and` binds tighter than `or`):
    expr   := term ("or" term)*
    term   := factor ("and" factor)*
    factor := "(" expr ")" | "not" factor | ATTR OP VALUE | ATTR "pr"
Each endpoint validates the parsed tree against its own rules: a syntax error is Okta's
E0000053 (malformed), a well-formed but unsupported attribute/operator is E0000031.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

OPERATORS = frozenset({"eq", "ne", "sw", "co", "ew", "gt", "ge", "lt", "le", "pr"})


class FilterError(ValueError):
    """Base class; `code` is the Okta error code the endpoint should answer with."""

    code = "E0000053"


class MalformedFilter(FilterError):
    code = "E0000053"


class UnsupportedFilter(FilterError):
    code = "E0000031"


@dataclass(frozen=True)
class Cmp:
    attr: str
    op: str
    value: object = None


@dataclass(frozen=True)
class And:
    left: object
    right: object


@dataclass(frozen=True)
class Or:
    left: object
    right: object


@dataclass(frozen=True)
class Not:
    inner: object


_TOKEN = re.compile(r'\s*(?:(\()|(\))|("(?:[^"\\]|\\.)*")|([A-Za-z_$][\w.:$-]*)|(-?\d+(?:\.\d+)?))')
_ESCAPE = re.compile(r"\\(.)")


def _tokenize(text: str) -> list[tuple[str, object]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise MalformedFilter(f"unexpected character at position {pos}")
        pos = m.end()
        lp, rp, string, word, number = m.groups()
        if lp:
            tokens.append(("(", None))
        elif rp:
            tokens.append((")", None))
        elif string is not None:
            tokens.append(("str", _ESCAPE.sub(r"\1", string[1:-1])))
        elif word is not None:
            tokens.append(("word", word))
        else:
            tokens.append(("num", float(number) if "." in number else int(number)))
    return tokens


class _Parser:
    def __init__(self, tokens):
        self.tokens, self.pos = tokens, 0

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None)

    def take(self):
        tok = self.peek()
        self.pos += 1
        return tok

    def is_word(self, word: str) -> bool:
        kind, value = self.peek()
        return kind == "word" and str(value).lower() == word

    def expr(self):
        node = self.term()
        while self.is_word("or"):
            self.take()
            node = Or(node, self.term())
        return node

    def term(self):
        node = self.factor()
        while self.is_word("and"):
            self.take()
            node = And(node, self.factor())
        return node

    def factor(self):
        kind, value = self.take()
        if kind == "(":
            node = self.expr()
            if self.take()[0] != ")":
                raise MalformedFilter("missing closing parenthesis")
            return node
        if kind == "word" and str(value).lower() == "not":
            return Not(self.factor())
        if kind != "word":
            raise MalformedFilter("expected an attribute name")
        op_kind, op = self.take()
        if op_kind != "word" or str(op).lower() not in OPERATORS:
            raise MalformedFilter(f"expected an operator after {value}")
        op = str(op).lower()
        if op == "pr":
            return Cmp(str(value), op)
        v_kind, v = self.take()
        if v_kind == "str" or v_kind == "num":
            return Cmp(str(value), op, v)
        if v_kind == "word" and str(v).lower() in ("true", "false", "null"):
            return Cmp(str(value), op, {"true": True, "false": False, "null": None}[str(v).lower()])
        raise MalformedFilter(f"expected a value after {value} {op}")


def parse(text: str):
    """Parse a filter expression; raise MalformedFilter on bad syntax."""
    tokens = _tokenize(text)
    if not tokens:
        raise MalformedFilter("empty expression")
    parser = _Parser(tokens)
    node = parser.expr()
    if parser.pos != len(tokens):
        raise MalformedFilter("unexpected text after the expression")
    return node


def comparisons(node):
    """Every Cmp leaf of the tree."""
    if isinstance(node, Cmp):
        yield node
    elif isinstance(node, Not):
        yield from comparisons(node.inner)
    else:
        yield from comparisons(node.left)
        yield from comparisons(node.right)


def has_not(node) -> bool:
    if isinstance(node, Not):
        return True
    if isinstance(node, (And, Or)):
        return has_not(node.left) or has_not(node.right)
    return False


def canonical_time(value: object) -> str:
    """An ISO 8601 literal as Okta's canonical `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC)."""
    if not isinstance(value, str):
        raise MalformedFilter("a date value must be a quoted ISO 8601 string")
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise MalformedFilter(f"invalid date: {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def normalize_dates(node, date_attrs: frozenset[str]):
    """Rewrite date literals into canonical strings so evaluation is a string comparison."""
    if isinstance(node, Cmp):
        if node.attr in date_attrs and node.op != "pr":
            return Cmp(node.attr, node.op, canonical_time(node.value))
        return node
    if isinstance(node, Not):
        return Not(normalize_dates(node.inner, date_attrs))
    return type(node)(normalize_dates(node.left, date_attrs), normalize_dates(node.right, date_attrs))


def resolve(obj: object, path: str) -> list:
    """All values at a dotted path; lists fan out (`target.id` matches any target)."""
    current = [obj]
    for part in path.split("."):
        nxt = []
        for item in current:
            if isinstance(item, dict):
                if part in item:
                    value = item[part]
                    if isinstance(value, list):
                        nxt.extend(value)
                    else:
                        nxt.append(value)
        current = nxt
    return current


def _compare(actual: object, op: str, expected: object, fold: bool) -> bool:
    if op == "pr":
        return actual is not None and actual != ""
    if isinstance(actual, bool) or isinstance(expected, bool):
        if op == "eq":
            return actual is expected
        return op == "ne" and actual is not expected
    if isinstance(actual, str) and isinstance(expected, str):
        if fold:
            actual, expected = actual.casefold(), expected.casefold()
    elif isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
        pass
    elif expected is None:
        return (actual is None) if op == "eq" else (op == "ne" and actual is not None)
    else:
        return op == "ne"
    if op == "eq":
        return actual == expected
    if op == "ne":
        return actual != expected
    if op == "sw":
        return isinstance(actual, str) and actual.startswith(expected)
    if op == "ew":
        return isinstance(actual, str) and actual.endswith(expected)
    if op == "co":
        return isinstance(actual, str) and expected in actual
    if op == "gt":
        return actual > expected
    if op == "ge":
        return actual >= expected
    if op == "lt":
        return actual < expected
    if op == "le":
        return actual <= expected
    return False


def evaluate(node, obj: object, *, fold: bool = False) -> bool:
    """Does `obj` match? `fold=True` compares strings case-insensitively (Okta `search`)."""
    if isinstance(node, And):
        return evaluate(node.left, obj, fold=fold) and evaluate(node.right, obj, fold=fold)
    if isinstance(node, Or):
        return evaluate(node.left, obj, fold=fold) or evaluate(node.right, obj, fold=fold)
    if isinstance(node, Not):
        return not evaluate(node.inner, obj, fold=fold)
    values = resolve(obj, node.attr)
    if node.op == "ne":
        return all(_compare(v, "ne", node.value, fold) for v in values) if values else node.value is not None
    if not values:
        return node.op == "eq" and node.value is None
    return any(_compare(v, node.op, node.value, fold) for v in values)
