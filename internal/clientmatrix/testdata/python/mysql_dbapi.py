"""The work of the client matrix's Python MariaDB programs (internal/clientmatrix).

PyMySQL (my_pymysql.py) and mysqlclient (my_mysqlclient.py) share the
DB-API 2.0 interface, so they share this work: one long-lived connection
with autocommit off and session state set once (time_zone, sql_mode, the
session's character set, a user variable, a SQL prepared statement). Each
iteration checks that state, transfers money in a committed and a
rolled-back transaction (executemany inserts), runs the prepared statement
with a user variable, recovers from three errors (missing table, duplicate
key, CHECK violation inside a transaction), round-trips 1.5 MiB of text
and of binary, and checks LAST_INSERT_ID() after a commit. Neither driver
has a pool or server-side prepared statements of its own.
"""

import decimal

import common
from common import Mismatch, equal, expect

D = decimal.Decimal


class Session:
    """The session state a program sets up and then relies on."""

    def __init__(self, name, time_zone, epoch, sql_mode, set_names, collation, pipes):
        self.name = name
        self.time_zone = time_zone  # SET time_zone
        self.epoch = epoch  # FROM_UNIXTIME(0) in that zone
        self.sql_mode = sql_mode  # SET sql_mode; must include ANSI_QUOTES
        self.set_names = set_names  # a SET NAMES statement, or None
        self.collation = collation  # @@collation_connection afterwards
        self.pipes = pipes  # what 'x' || 'y' gives under sql_mode


def setup(conn, s):
    cur = conn.cursor()
    cur.execute("SET time_zone = %s", (s.time_zone,))
    cur.execute("SET sql_mode = %s", (s.sql_mode,))
    if s.set_names:
        cur.execute(s.set_names)
    cur.execute("SET @client = %s", (s.name,))
    cur.execute("PREPARE balance_of FROM 'SELECT \"balance\" FROM \"accounts\" WHERE \"name\" = ?'")
    conn.commit()
    cur.close()


def fails(conn, cur, errno, what, sql, args=None):
    """Run sql, which must fail with MariaDB error errno, then roll back."""
    try:
        cur.execute(sql, args)
    except Exception as e:  # the drivers' error classes differ
        code = e.args[0] if e.args else None
        equal(code, errno, "error of " + what + " (%s)" % (e,))
        conn.rollback()
        return
    raise Mismatch(what + " did not fail")


def iteration(conn, s, i, users):
    a, b, c = ("%s-%d-%s" % (s.name, i, x) for x in "abc")
    cur = conn.cursor()

    cur.execute("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1), @@session.time_zone,"
                " DATE_FORMAT(FROM_UNIXTIME(0), '%%Y-%%m-%%d %%H:%%i'), @@session.sql_mode,"
                " @@session.character_set_client, @@session.character_set_results, @@session.collation_connection,"
                " @client, CONCAT('€ ', %s, ' 😀'), 'x' || 'y'", ("ü%d" % i,))
    user, tz, epoch, sql_mode, cs_client, cs_results, collation, client, text, pipes = cur.fetchone()
    conn.commit()
    users.observe(user)
    equal(tz, s.time_zone, "time_zone")
    equal(epoch, s.epoch, "FROM_UNIXTIME(0)")
    expect("ANSI_QUOTES" in sql_mode.split(","), "sql_mode is %r" % sql_mode)
    equal((cs_client, cs_results), ("utf8mb4", "utf8mb4"), "character_set_client and _results")
    equal(collation, s.collation, "collation_connection")
    equal(client, s.name, "@client")
    equal(text, "€ ü%d 😀" % i, "UTF-8 round trip")
    equal(pipes, s.pipes, "'x' || 'y'")

    # A transfer that commits, and one that rolls back.
    cur.executemany('INSERT INTO "accounts" ("name", "balance") VALUES (%s, %s)', [(a, 100), (b, 0)])
    cur.execute('UPDATE "accounts" SET "balance" = "balance" + %s WHERE "name" = %s', (D("-30.50"), a))
    cur.execute('UPDATE "accounts" SET "balance" = "balance" + %s WHERE "name" = %s', (D("30.50"), b))
    conn.commit()
    cur.execute("INSERT INTO accounts (name, balance) VALUES (%s, %s)", (c, 5))
    cur.execute("UPDATE accounts SET balance = 0 WHERE name = %s", (a,))
    conn.rollback()
    cur.execute("SELECT name, balance FROM accounts WHERE name IN (%s, %s, %s) ORDER BY name", (a, b, c))
    equal([tuple(r) for r in cur.fetchall()], [(a, D("69.50")), (b, D("30.50"))], "accounts after a commit and a rollback")

    # The SQL prepared statement from setup, with a user variable.
    cur.execute("SET @who = %s", (b,))
    cur.execute("EXECUTE balance_of USING @who")
    equal([tuple(r) for r in cur.fetchall()], [(D("30.50"),)], "EXECUTE balance_of")
    conn.commit()

    # Errors, then the connection goes on.
    fails(conn, cur, 1146, "a missing table", "SELECT * FROM no_such_table")
    fails(conn, cur, 1062, "a duplicate key", "INSERT INTO accounts (name, balance) VALUES (%s, %s)", (a, 1))
    cur.execute("UPDATE accounts SET balance = balance - 1 WHERE name = %s", (a,))
    fails(conn, cur, 4025, "a CHECK violation", "UPDATE accounts SET balance = balance - 1000 WHERE name = %s", (b,))
    cur.execute("SELECT balance FROM accounts WHERE name = %s", (a,))
    equal(tuple(cur.fetchone()), (D("69.50"),), "balance after the failed transaction")
    conn.commit()

    # 1.5 MiB of text and of binary, both ways; LAST_INSERT_ID() after the commit.
    body, data = common.big_text(i), common.big_bytes(i)
    cur.execute("INSERT INTO documents (name, body, data) VALUES (%s, %s, %s)", (a, body, data))
    doc = cur.lastrowid
    conn.commit()
    cur.execute("SELECT LAST_INSERT_ID()")
    equal(cur.fetchone()[0], doc, "LAST_INSERT_ID() after the commit")
    cur.execute("SELECT body, data FROM documents WHERE id = %s", (doc,))
    got_body, got_data = cur.fetchone()
    equal(got_body, body, "the large text read back")
    equal(bytes(got_data), data, "the large binary read back")
    cur.execute("DELETE FROM documents WHERE id = %s", (doc,))
    conn.commit()
    cur.close()


def main(session, connect):
    """Run the matrix's work for a driver whose connect(cfg) opens a connection."""
    cfg = common.Config()
    conn = connect(cfg)
    try:
        setup(conn, session)
        common.run(session.name, cfg, lambda i, users: iteration(conn, session, i, users))
    finally:
        conn.close()
