"""fingerprint_sql and redact_statement: golden cases, idempotence, no literal left."""

from __future__ import annotations

import random

import pytest

from perfpulse.model.fingerprint import fingerprint_sql, redact_statement

FINGERPRINTS = [
    # The examples from the issue.
    (
        "SELECT * FROM users WHERE id = 42 AND name = 'O''Brien'",
        "SELECT * FROM users WHERE id = ? AND name = ?",
    ),
    ("select * from t where id in (1, 2, 3)", "SELECT * FROM t WHERE id IN (?)"),
    ("INSERT INTO t (a,b) VALUES (1,'x'),(2,'y')", "INSERT INTO t (a, b) VALUES (?, ?)"),
    ("SELECT * FROM t WHERE a = $1 AND b = $2", "SELECT * FROM t WHERE a = ? AND b = ?"),
    ("SELECT a FROM t -- token=hunter2", "SELECT a FROM t"),
    # Literals.
    (
        "SELECT $$it's$$, $fn$ x $y $fn$, E'a\\'b', N'x', X'1f', B'101', U&'d'",
        "SELECT ?, ?, ?, ?, ?, ?, ?",
    ),
    (
        "select t1.a from t1 where x = -5 and y = a - 5 and z = (-1.5e3) and w = .5",
        "SELECT t1.a FROM t1 WHERE x = ? AND y = a - ? AND z = (?) AND w = ?",
    ),
    ("SELECT 0x1F, 1e10, 3.14, x - -2", "SELECT ?, ?, ?, x - ?"),
    (
        "SELECT CASE WHEN a THEN 1 ELSE 2 END - 1 FROM t",
        "SELECT CASE WHEN a THEN ? ELSE ? END - ? FROM t",
    ),
    (
        "SELECT * FROM t WHERE flag = true AND x IS NULL;",
        "SELECT * FROM t WHERE flag = ? AND x IS NULL",
    ),
    ("SELECT * FROM t WHERE a = 'unterminated secret", "SELECT * FROM t WHERE a = ?"),
    ("SELECT * FROM t WHERE a = $$unterminated", "SELECT * FROM t WHERE a = ?"),
    ('SELECT "unterminated', "SELECT ?"),
    # Backslashes: MySQL escapes, standard SQL does not.
    (
        "select * from t where a = 'it\\'s secret' and b = 1",
        "SELECT * FROM t WHERE a = ? AND b = ?",
    ),
    ("SELECT 'a\\\\' , 'b'", "SELECT ?, ?"),
    ("select * from t where a = 'C:\\' and b = 'x'", "SELECT * FROM t WHERE a = ? AND b = ?"),
    (
        "SELECT * FROM t WHERE x = 'it\\'s' AND y = 'cut sho",
        "SELECT * FROM t WHERE x = ? AND y = ?",
    ),
    # Both readings possible: whatever either calls a literal goes.
    ("select * from t where a = 'quote\\' here' and b = 1", "SELECT * FROM t WHERE a = ?"),
    ("select * from t where a = 'C:\\' and b = 1", "SELECT * FROM t WHERE a = ?"),
    ("SELECT 'it''s', 'a''''b', ''''", "SELECT ?, ?, ?"),
    # Placeholders.
    (
        "SELECT * FROM t WHERE a = %s AND b = %(name)s AND c = :name AND d = ? AND e = :1",
        "SELECT * FROM t WHERE a = ? AND b = ? AND c = ? AND d = ? AND e = :?",
    ),
    ("SELECT x::int, a[1:2] FROM t", "SELECT x::int, a[?:?] FROM t"),
    ("SELECT 100 %% 7, a % b", "SELECT ? %% ?, a % b"),
    # Lists.
    ("SELECT * FROM t WHERE x IN(1,2)", "SELECT * FROM t WHERE x IN(?)"),
    ("SELECT * FROM t WHERE id IN (%s, %s, %s)", "SELECT * FROM t WHERE id IN (?)"),
    ("SELECT * FROM t WHERE id IN (1, 2, a, 3, 4)", "SELECT * FROM t WHERE id IN (?, a, ?)"),
    (
        "SELECT * FROM t WHERE (a, b) IN ((1, 2), (3, 4))",
        "SELECT * FROM t WHERE (a, b) IN ((?, ?))",
    ),
    (
        "SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE c IN (1, 2))",
        "SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE c IN (?))",
    ),
    ("SELECT * FROM t WHERE id = ANY(ARRAY[1,2,3])", "SELECT * FROM t WHERE id = ANY(ARRAY[?])"),
    (
        "INSERT INTO t VALUES (1, now()), (2, now()), (3, DEFAULT) ON CONFLICT DO NOTHING",
        "INSERT INTO t VALUES (?, now()), (?, DEFAULT) ON CONFLICT DO NOTHING",
    ),
    (
        "INSERT INTO t (a) VALUES (1), (2) RETURNING id",
        "INSERT INTO t (a) VALUES (?) RETURNING id",
    ),
    # Comments and whitespace.
    ("SELECT /* secret */ a FROM t", "SELECT a FROM t"),
    ("SELECT a/*x*/FROM t", "SELECT a FROM t"),
    ("/* app=shop,route=/cart */ SELECT 1", "SELECT ?"),
    ("SELECT a -- password=hunter2\nFROM t", "SELECT a FROM t"),
    ("  SELECT\n\t a ,b\n  FROM   t  ", "SELECT a, b FROM t"),
    ("SELECT ( a ) FROM t", "SELECT (a) FROM t"),
    ("SELECT ';' ; SELECT 1;;", "SELECT ?; SELECT ?"),
    ("", ""),
    ("   ", ""),
    # Keywords up, identifiers as written.
    (
        'select "User"."id", `order` from "User" where "User"."email" = $1',
        'SELECT "User"."id", `order` FROM "User" WHERE "User"."email" = ?',
    ),
    ("select t.order, t.select, Count(*) from t", "SELECT t.order, t.select, Count(*) FROM t"),
    (
        "select * from t order by a desc nulls last limit 10 offset 20 for update skip locked",
        "SELECT * FROM t ORDER BY a DESC NULLS LAST LIMIT ? OFFSET ? FOR UPDATE SKIP LOCKED",
    ),
    ("SELECT key, name, type FROM kv", "SELECT key, name, type FROM kv"),
    ("SELECT café FROM t", "SELECT café FROM t"),
]

REDACTIONS = [
    (
        "SELECT * FROM users WHERE id = 42 AND name = 'O''Brien'",
        "SELECT * FROM users WHERE id = ? AND name = ?",
    ),
    ("select * from t where id in (1, 2, 3)", "select * from t where id in (?, ?, ?)"),
    ("INSERT INTO t (a,b) VALUES (1,'x'),(2,'y')", "INSERT INTO t (a,b) VALUES (?,?),(?,?)"),
    (
        "SELECT * FROM t WHERE a = $1 AND b = %s AND c = :name AND d = ?",
        "SELECT * FROM t WHERE a = $1 AND b = %s AND c = :name AND d = ?",
    ),
    ("SELECT *\n  FROM users\n WHERE name = 'x'", "SELECT *\n  FROM users\n WHERE name = ?"),
    ("SELECT 1 -- password=hunter2\nFROM t", "SELECT ?\nFROM t"),
    ("SELECT a\n  -- secret\n  FROM t", "SELECT a\n  FROM t"),
    ("SELECT a /* secret */ FROM t", "SELECT a FROM t"),
    ("SELECT a/* secret */FROM t", "SELECT a FROM t"),
    ("  /* lead */ SELECT -5, true  ", "SELECT -?, ?"),
    (
        "select * from t where a = 'it\\'s secret' and b = 1",
        "select * from t where a = ? and b = ?",
    ),
    ("SELECT x::int FROM t;", "SELECT x::int FROM t;"),
    ("", ""),
]


@pytest.mark.parametrize(("statement", "expected"), FINGERPRINTS)
def test_fingerprint_golden(statement: str, expected: str) -> None:
    assert fingerprint_sql(statement) == expected


@pytest.mark.parametrize(("statement", "expected"), FINGERPRINTS)
def test_fingerprint_is_idempotent(statement: str, expected: str) -> None:
    assert fingerprint_sql(expected) == expected


@pytest.mark.parametrize(("statement", "expected"), REDACTIONS)
def test_redact_golden(statement: str, expected: str) -> None:
    assert redact_statement(statement) == expected


@pytest.mark.parametrize(("statement", "expected"), REDACTIONS)
def test_redact_is_idempotent(statement: str, expected: str) -> None:
    assert redact_statement(expected) == expected


@pytest.mark.parametrize("statement", [s for s, _ in FINGERPRINTS + REDACTIONS])
def test_redacted_statement_has_the_same_fingerprint(statement: str) -> None:
    assert fingerprint_sql(redact_statement(statement)) == fingerprint_sql(statement)


def test_long_statement_is_fingerprinted_without_the_cache() -> None:
    statement = "INSERT INTO t (a, b) VALUES " + ", ".join(f"({i}, 'v{i}')" for i in range(2000))
    assert len(statement) > 8192
    assert fingerprint_sql(statement) == "INSERT INTO t (a, b) VALUES (?, ?)"


def _literal(rng: random.Random, mysql: bool) -> str:
    """A literal holding a secret, escaped the way one database would."""
    secret = "SECRET" + "".join(rng.choice("ab 'O\\\"%$:;-/*") for _ in range(6)) + "SECRET"
    kind = rng.randrange(5)
    if kind == 0 and mysql:
        return "'" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if kind == 1:
        return "E'" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if kind == 2 and "$$" not in secret:
        return f"$${secret}$$"
    if kind == 3:
        return str(rng.choice([7654321, -7654321, 76543.21]))
    if mysql:
        secret = secret.replace("\\", "\\\\")
    return "'" + secret.replace("'", "''") + "'"


def test_no_literal_survives_in_either_dialect() -> None:
    rng = random.Random(11)
    for _ in range(3000):
        mysql = rng.random() < 0.5
        statement = (
            f"SELECT a FROM t WHERE x = {_literal(rng, mysql)} "
            f"AND y IN ({_literal(rng, mysql)}, {_literal(rng, mysql)})"
            f"{rng.choice(['', ' -- SECRET', ' /* SECRET */', chr(10)])}"
            f" AND z = {_literal(rng, mysql)}"
        )
        for normalize in (fingerprint_sql, redact_statement):
            out = normalize(statement)
            assert "SECRET" not in out and "6543" not in out, statement
            assert normalize(out) == out, statement


def test_garbage_never_raises_and_is_idempotent() -> None:
    rng = random.Random(20240131)
    alphabet = "aZ09 '\"`$-/*#?&=:@%[]().,;\\\n\tEexX_é"
    for _ in range(3000):
        statement = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        for normalize in (fingerprint_sql, redact_statement):
            once = normalize(statement)
            assert normalize(once) == once, statement
