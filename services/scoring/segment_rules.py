"""Segment rules: a small, safe expression language over a customer's scores and facts.

    churn_risk >= 0.6 and clv >= 500 and tier in ["gold", "platinum"]
    not (rfm_segment == "Champions") or last_purchase_at < "2026-01-01"

Grammar (lowest precedence first; keywords are case-insensitive):

    rule       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | primary
    primary    := "(" or ")" | comparison
    comparison := ATTRIBUTE ("==" | "!=" | "<" | "<=" | ">" | ">=") literal
                | ATTRIBUTE ["not"] "in" "[" [literal ("," literal)*] "]"
    literal    := NUMBER | STRING | "null"

Rules are parsed here by a tokenizer and a recursive-descent parser (never `eval`), checked
against the attribute table (unknown attribute, operator or literal of the wrong type), and
compiled twice: to a Python predicate over one customer's row, for the incremental path,
and to a SQLAlchemy where-clause over `customers`, for evaluating a whole segment at once.

Both compilations use two-valued logic so that they always agree: a comparison with a
missing (NULL) attribute is false, except `!=` and `not in`, which are true (`tier !=
"gold"` holds for a customer without a tier), and `== null` / `!= null` test for presence.
Times are compared with ISO-8601 strings; a date or a time without an offset means UTC.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property, lru_cache
from typing import Any, Literal

from sqlalchemy import ColumnElement, DateTime, Float, and_, cast, false, func, literal, not_, or_

from services.scoring.models import customers

MAX_RULE_LENGTH = 2000
MAX_DEPTH = 40  # nesting of parentheses and `not`, so a hostile rule cannot exhaust the stack
MAX_LIST = 500


class Kind(StrEnum):
    """The type of an attribute, which decides the operators and literals it accepts."""

    NUMBER = "number"
    TEXT = "text"
    TIME = "time"


# The attributes a rule may name: the `customers` columns that describe a customer, and one
# derived from `now`. Internal columns (status, fit_id, published...) are deliberately absent.
ATTRIBUTES: dict[str, Kind] = {
    "churn_risk": Kind.NUMBER,
    "churn_band": Kind.TEXT,
    "p_alive": Kind.NUMBER,
    "clv": Kind.NUMBER,
    "expected_purchases": Kind.NUMBER,
    "rfm_r": Kind.NUMBER,
    "rfm_f": Kind.NUMBER,
    "rfm_m": Kind.NUMBER,
    "rfm_segment": Kind.TEXT,
    "tier": Kind.TEXT,
    "points_balance": Kind.NUMBER,
    "locale": Kind.TEXT,
    "orders": Kind.NUMBER,
    "purchase_days": Kind.NUMBER,
    "spend_minor": Kind.NUMBER,
    "first_purchase_at": Kind.TIME,
    "last_purchase_at": Kind.TIME,
    "days_since_last_purchase": Kind.NUMBER,
    "signed_up_at": Kind.TIME,
}
DERIVED = frozenset({"days_since_last_purchase"})
# The columns a caller must load for `Rule.matches` (the derived attribute needs one).
COLUMNS: tuple[str, ...] = tuple(sorted((set(ATTRIBUTES) - DERIVED) | {"last_purchase_at"}))

ErrorKind = Literal["syntax", "unknown-attribute", "type-mismatch"]


class RuleError(ValueError):
    """A rule that cannot be saved; `position` is the 0-based character offset at fault."""

    def __init__(self, kind: ErrorKind, position: int, message: str) -> None:
        super().__init__(f"{message} (at position {position})")
        self.kind: ErrorKind = kind
        self.position = position
        self.message = message


# --- tokens -------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>|=)
  | (?P<punct>[()\[\],])
    """,
    re.VERBOSE,
)
_KEYWORDS = frozenset({"and", "or", "not", "in", "null"})
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t"}


@dataclass(frozen=True)
class Token:
    kind: str  # number | string | name | keyword | op | punct | end
    text: str
    position: int
    value: Any = None


def _unescape(body: str, position: int) -> str:
    out: list[str] = []
    chars = iter(enumerate(body))
    for index, char in chars:
        if char == "\\":
            _, escaped = next(chars)
            if escaped not in _ESCAPES:
                raise RuleError("syntax", position + index + 1, f"unknown escape \\{escaped}")
            out.append(_ESCAPES[escaped])
        else:
            out.append(char)
    return "".join(out)


def tokenize(source: str) -> list[Token]:
    """The tokens of `source`, ending with an `end` token; RuleError on a stray character."""
    tokens: list[Token] = []
    position = 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            char = source[position]
            if char in "\"'":
                raise RuleError("syntax", position, "unterminated string")
            raise RuleError("syntax", position, f"unexpected character {char!r}")
        kind, text = match.lastgroup or "", match.group()
        if kind == "number":
            tokens.append(Token(kind, text, position, float(text)))
        elif kind == "string":
            tokens.append(Token(kind, text, position, _unescape(text[1:-1], position)))
        elif kind == "name" and text.lower() in _KEYWORDS:
            tokens.append(Token("keyword", text.lower(), position))
        elif kind == "op" and text == "=":
            raise RuleError("syntax", position, "use == to compare")
        elif kind != "space":
            tokens.append(Token(kind, text, position))
        position = match.end()
    tokens.append(Token("end", "", len(source)))
    return tokens


# --- syntax tree --------------------------------------------------------------------------

Value = float | str | datetime | None


@dataclass(frozen=True)
class Compare:
    attribute: str
    op: str  # == != < <= > >=
    value: Value


@dataclass(frozen=True)
class In:
    attribute: str
    values: tuple[Value, ...]
    negated: bool


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class BoolOp:
    op: Literal["and", "or"]
    operands: tuple[Node, ...]


Node = Compare | In | Not | BoolOp


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens = tokenize(source)
        self.index = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def _advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def _accept(self, kind: str, text: str) -> bool:
        if self.current.kind == kind and self.current.text == text:
            self.index += 1
            return True
        return False

    def _expect(self, kind: str, text: str, what: str) -> Token:
        token = self.current
        if token.kind != kind or token.text != text:
            raise RuleError("syntax", token.position, f"expected {what}, found {_shown(token)}")
        return self._advance()

    def parse(self) -> Node:
        node = self._or(0)
        if self.current.kind != "end":
            raise RuleError(
                "syntax",
                self.current.position,
                f"expected 'and', 'or' or the end of the rule, found {_shown(self.current)}",
            )
        return node

    def _or(self, depth: int) -> Node:
        operands = [self._and(depth)]
        while self._accept("keyword", "or"):
            operands.append(self._and(depth))
        return operands[0] if len(operands) == 1 else BoolOp("or", tuple(operands))

    def _and(self, depth: int) -> Node:
        operands = [self._not(depth)]
        while self._accept("keyword", "and"):
            operands.append(self._not(depth))
        return operands[0] if len(operands) == 1 else BoolOp("and", tuple(operands))

    def _not(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise RuleError("syntax", self.current.position, "the rule is nested too deeply")
        if self._accept("keyword", "not"):
            return Not(self._not(depth + 1))
        if self._accept("punct", "("):
            node = self._or(depth + 1)
            self._expect("punct", ")", "')'")
            return node
        return self._comparison()

    def _comparison(self) -> Node:
        token = self.current
        if token.kind != "name":
            raise RuleError(
                "syntax", token.position, f"expected an attribute, found {_shown(token)}"
            )
        self._advance()
        attribute = token.text
        kind = ATTRIBUTES.get(attribute)
        if kind is None:
            raise RuleError("unknown-attribute", token.position, _unknown(attribute))
        negated = self._accept("keyword", "not")
        if negated or (self.current.kind == "keyword" and self.current.text == "in"):
            self._expect("keyword", "in", "'in' after 'not'")
            return In(attribute, self._list(attribute, kind), negated)
        op = self.current
        if op.kind != "op":
            raise RuleError(
                "syntax", op.position, f"expected a comparison or 'in', found {_shown(op)}"
            )
        self._advance()
        value, at = self._literal(attribute, kind)
        if op.text not in ("==", "!=") and kind is Kind.TEXT:
            raise RuleError(
                "type-mismatch",
                op.position,
                f"{attribute} is text: use ==, != or in, not {op.text}",
            )
        if op.text not in ("==", "!=") and value is None:
            raise RuleError("type-mismatch", at, "null can only be compared with == or !=")
        return Compare(attribute, op.text, value)

    def _list(self, attribute: str, kind: Kind) -> tuple[Value, ...]:
        self._expect("punct", "[", "'['")
        values: list[Value] = []
        if not self._accept("punct", "]"):
            while True:
                if len(values) >= MAX_LIST:
                    raise RuleError(
                        "syntax", self.current.position, f"lists hold at most {MAX_LIST}"
                    )
                values.append(self._literal(attribute, kind)[0])
                if self._accept("punct", "]"):
                    break
                self._expect("punct", ",", "',' or ']'")
        return tuple(values)

    def _literal(self, attribute: str, kind: Kind) -> tuple[Value, int]:
        token = self.current
        if token.kind == "keyword" and token.text == "null":
            self._advance()
            return None, token.position
        if token.kind == "name":
            raise RuleError(
                "syntax",
                token.position,
                f"expected a number, a string or null, found {token.text!r}"
                " (attributes cannot be compared with each other; quote text)",
            )
        if token.kind not in ("number", "string"):
            raise RuleError(
                "syntax",
                token.position,
                f"expected a number, a string or null, found {_shown(token)}",
            )
        self._advance()
        if kind is Kind.NUMBER and token.kind != "number":
            raise RuleError("type-mismatch", token.position, f"{attribute} is a number, not text")
        if kind is Kind.TEXT and token.kind != "string":
            raise RuleError(
                "type-mismatch", token.position, f"{attribute} is text: quote the value"
            )
        if kind is Kind.TIME:
            if token.kind != "string":
                raise RuleError(
                    "type-mismatch",
                    token.position,
                    f'{attribute} is a time: compare it with a string like "2026-01-31"',
                )
            return _time(token), token.position
        if kind is Kind.NUMBER and not math.isfinite(token.value):
            raise RuleError("syntax", token.position, "the number is out of range")
        return token.value, token.position


def _time(token: Token) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(token.value))
    except ValueError as exc:
        raise RuleError("type-mismatch", token.position, "not an ISO-8601 date or time") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _shown(token: Token) -> str:
    return "the end of the rule" if token.kind == "end" else repr(token.text)


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, ATTRIBUTES, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown attribute {name!r}{hint}"


# --- compiled rules -----------------------------------------------------------------------

Row = Mapping[str, Any]
Predicate = Callable[[Row, datetime], bool]


@dataclass(frozen=True)
class Rule:
    """A parsed, checked rule with its two compilations."""

    text: str
    tree: Node

    @property
    def attributes(self) -> frozenset[str]:
        return _attributes(self.tree)

    @cached_property
    def predicate(self) -> Predicate:
        """The rule as a Python function of (row, now), built once per rule."""
        return _predicate(self.tree)

    def matches(self, row: Row, now: datetime) -> bool:
        """Whether the customer `row` (a mapping holding `COLUMNS`) satisfies the rule."""
        return self.predicate(row, now)

    def where(self, now: datetime) -> ColumnElement[bool]:
        """The rule as a where-clause over `customers` (for `now`'s derived attributes)."""
        return _clause(self.tree, now)


@lru_cache(maxsize=256)
def parse(source: str) -> Rule:
    """Parse and check `source`; RuleError names the kind of error and its position."""
    if len(source) > MAX_RULE_LENGTH:
        raise RuleError("syntax", MAX_RULE_LENGTH, f"rules are at most {MAX_RULE_LENGTH} long")
    if not source.strip():
        raise RuleError("syntax", 0, "the rule is empty")
    return Rule(source, _Parser(source).parse())


def _attributes(node: Node) -> frozenset[str]:
    if isinstance(node, (Compare, In)):
        return frozenset({node.attribute})
    if isinstance(node, Not):
        return _attributes(node.operand)
    return frozenset().union(*(_attributes(operand) for operand in node.operands))


def _value(row: Row, attribute: str, now: datetime) -> Any:
    if attribute == "days_since_last_purchase":
        last = row["last_purchase_at"]
        return None if last is None else math.floor((now - last).total_seconds() / 86400)
    return row[attribute]


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}


def _predicate(node: Node) -> Predicate:
    if isinstance(node, BoolOp):
        parts = [_predicate(operand) for operand in node.operands]
        combine = all if node.op == "and" else any
        return lambda row, now: combine(part(row, now) for part in parts)
    if isinstance(node, Not):
        inner = _predicate(node.operand)
        return lambda row, now: not inner(row, now)
    if isinstance(node, In):
        attribute, values, negated = node.attribute, node.values, node.negated
        return lambda row, now: (_value(row, attribute, now) in values) != negated
    attribute, wanted = node.attribute, node.value
    if node.op == "==":
        return lambda row, now: _value(row, attribute, now) == wanted
    if node.op == "!=":
        return lambda row, now: _value(row, attribute, now) != wanted
    order = _ORDER[node.op]

    def compare(row: Row, now: datetime) -> bool:
        value = _value(row, attribute, now)
        return value is not None and order(value, wanted)

    return compare


def _column(attribute: str, now: datetime) -> ColumnElement[Any]:
    # Numbers compare as double precision, as Python compares them (and a literal like
    # 500.5 is never bound as a BIGINT).
    if attribute == "days_since_last_purchase":
        since = literal(now, DateTime(timezone=True)) - customers.c.last_purchase_at
        return cast(func.floor(func.extract("epoch", since) / 86400), Float)
    if ATTRIBUTES[attribute] is Kind.NUMBER:
        return cast(customers.c[attribute], Float)
    return customers.c[attribute]


def _clause(node: Node, now: datetime) -> ColumnElement[bool]:
    # Every leaf is two-valued (never NULL), so `not` and the boolean operators mean
    # exactly what they mean in `_predicate`.
    if isinstance(node, BoolOp):
        parts = [_clause(operand, now) for operand in node.operands]
        return and_(*parts) if node.op == "and" else or_(*parts)
    if isinstance(node, Not):
        return not_(_clause(node.operand, now))
    column = _column(node.attribute, now)
    if isinstance(node, In):
        present = [value for value in node.values if value is not None]
        tests = [column.in_(present)] if present else []
        if None in node.values:
            tests.append(column.is_(None))
        inside = func.coalesce(or_(*tests), false()) if tests else false()
        return not_(inside) if node.negated else inside
    if node.value is None:
        return column.is_(None) if node.op == "==" else column.is_not(None)
    if node.op == "==":
        return column.is_not_distinct_from(node.value)
    if node.op == "!=":
        return column.is_distinct_from(node.value)
    compared = {
        "<": column < node.value,
        "<=": column <= node.value,
        ">": column > node.value,
        ">=": column >= node.value,
    }[node.op]
    return func.coalesce(compared, false())


__all__ = ["ATTRIBUTES", "COLUMNS", "Kind", "Rule", "RuleError", "parse", "tokenize"]
