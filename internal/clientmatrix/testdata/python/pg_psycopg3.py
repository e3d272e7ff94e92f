"""The psycopg 3 client of the matrix (internal/clientmatrix).

One long-lived connection in autocommit mode with prepare_threshold=0, so
psycopg prepares every statement server-side (_pg3_N) on first use and
then only binds and executes it. Session state is set once: search_path,
time zone, statement_timeout and a custom setting through set_config.
Each iteration checks that state and that the prepared statements exist,
runs transaction blocks that commit and roll back, a statement prepared
explicitly and run more than five times, COPY FROM STDIN, executemany
(pipelined), errors followed by more work, 1.5 MiB of text and bytea both
ways, and queries on a psycopg_pool ConnectionPool from three threads.
"""

import datetime
import decimal
import sys
import threading

import psycopg
import psycopg.errors
import psycopg_pool

import common
from common import Mismatch, equal, expect

NAME = "psycopg3"
D = decimal.Decimal
UTC = datetime.timezone.utc


def conn_kwargs(cfg, app):
    return dict(host=cfg.host, port=cfg.port, user=cfg.user, password=cfg.password, dbname=cfg.database,
                application_name=app, connect_timeout=20)


def setup(conn):
    conn.execute("SET search_path TO app")
    conn.execute("SET TIME ZONE 'America/St_Johns'")
    conn.execute("SET statement_timeout = '25s'")
    conn.execute("SELECT set_config('app.client', %s, false)", [NAME])


def pool_work(pool, cfg, i):
    """Three threads each borrow a pooled connection for a transaction."""
    errors = []

    def worker(k):
        try:
            with pool.connection() as conn:
                user, doubled = conn.execute("SELECT current_user, %s::int * 2", [k]).fetchone()
                expect(user in cfg.backend_users, "pooled current_user %r" % user)
                equal(doubled, 2 * k, "pooled %d * 2" % k)
                conn.execute("INSERT INTO app.events (client, note) VALUES (%s, %s)", [NAME, "pool-%d-%d" % (i, k)])
        except Exception as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]


def iteration(conn, pool, cfg, i, users):
    a, b, c = ("%s-%d-%s" % (NAME, i, x) for x in "abc")

    row = conn.execute(
        "SELECT current_user, current_setting('search_path'), current_setting('TimeZone'),"
        " current_setting('statement_timeout'), current_setting('app.client', true),"
        " to_char(%s::timestamptz, 'YYYY-MM-DD HH24:MI TZH:TZM'), %s::timestamptz",
        [datetime.datetime(2024, 1, 1, tzinfo=UTC), datetime.datetime(2024, 1, 1, tzinfo=UTC)]).fetchone()
    user, search_path, tz, timeout, client, local, ts = row
    users.observe(user)
    equal(search_path, "app", "search_path")
    equal(tz, "America/St_Johns", "TimeZone")
    equal(timeout, "25s", "statement_timeout")
    equal(client, NAME, "app.client")
    equal(local, "2023-12-31 20:30 -03:30", "local time of 2024-01-01 00:00 UTC")
    equal(ts.utcoffset(), datetime.timedelta(hours=-3, minutes=-30), "UTC offset of a timestamptz")

    # prepare_threshold=0: the statements above are prepared on the server.
    prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '\\_pg3\\_%%'").fetchone()[0]
    expect(prepared >= 3, "only %d of psycopg's prepared statements exist on the server" % prepared)

    # A transfer that commits, and one that rolls back.
    with conn.transaction():
        conn.execute("INSERT INTO accounts (name, balance) VALUES (%s, %s), (%s, %s)", [a, 100, b, 0])
        conn.execute("UPDATE accounts SET balance = balance - %s WHERE name = %s", [D("30.50"), a])
        conn.execute("UPDATE accounts SET balance = balance + %s WHERE name = %s", [D("30.50"), b])
    with conn.transaction() as tx:
        conn.execute("INSERT INTO accounts (name, balance) VALUES (%s, %s)", [c, 5])
        conn.execute("UPDATE accounts SET balance = 0 WHERE name = %s", [a])
        raise psycopg.Rollback(tx)
    rows = conn.execute("SELECT name, balance FROM accounts WHERE name = ANY(%s) ORDER BY name", [[a, b, c]]).fetchall()
    equal(rows, [(a, D("69.50")), (b, D("30.50"))], "accounts after a commit and a rollback")

    # A statement prepared explicitly, run more than five times.
    for k in range(6):
        got = conn.execute("SELECT balance + %s FROM accounts WHERE name = %s", [k, b], prepare=True).fetchone()
        equal(got, (D("30.50") + k,), "prepared balance + %d" % k)

    # COPY FROM STDIN, and executemany (pipelined by psycopg).
    with conn.cursor() as cur:
        with cur.copy("COPY events (client, note) FROM STDIN") as copy:
            for k in range(200):
                copy.write_row((NAME, "%s-copy-%d" % (a, k)))
        cur.executemany("INSERT INTO events (client, note) VALUES (%s, %s)", [(NAME, "%s-many-%d" % (a, k)) for k in range(20)])
    n = conn.execute("SELECT count(*) FROM events WHERE note LIKE %s", [a + "-%"]).fetchone()[0]
    equal(n, 220, "events written by COPY and executemany")

    # Errors, then the connection goes on.
    try:
        conn.execute("SELECT 1/0")
        raise Mismatch("SELECT 1/0 did not fail")
    except psycopg.errors.DivisionByZero:
        pass
    try:
        with conn.transaction():
            conn.execute("UPDATE accounts SET balance = balance - 1 WHERE name = %s", [a])
            conn.execute("UPDATE accounts SET balance = balance - 1000 WHERE name = %s", [b])
        raise Mismatch("a negative balance did not violate the CHECK constraint")
    except psycopg.errors.CheckViolation:
        pass
    equal(conn.execute("SELECT balance FROM accounts WHERE name = %s", [a]).fetchone(), (D("69.50"),),
          "balance after the failed transaction")

    # 1.5 MiB of text and of bytea, both ways.
    body, data = common.big_text(i), common.big_bytes(i)
    doc = conn.execute("INSERT INTO documents (name, body, data) VALUES (%s, %s, %s) RETURNING id", [a, body, data]).fetchone()[0]
    got_body, got_data = conn.execute("SELECT body, data FROM documents WHERE id = %s", [doc]).fetchone()
    equal(got_body, body, "the large text read back")
    equal(bytes(got_data), data, "the large bytea read back")
    conn.execute("DELETE FROM documents WHERE id = %s", [doc])

    pool_work(pool, cfg, i)


def main():
    cfg = common.Config()
    conn = psycopg.connect(autocommit=True, prepare_threshold=0, **conn_kwargs(cfg, "cm-" + NAME))
    setup(conn)
    pool = psycopg_pool.ConnectionPool(
        kwargs=dict(autocommit=True, prepare_threshold=0, **conn_kwargs(cfg, "cm-%s-pool" % NAME)),
        min_size=2, max_size=3, timeout=20, open=True)
    try:
        pool.wait(timeout=20)
        common.run(NAME, cfg, lambda i, users: iteration(conn, pool, cfg, i, users))
    finally:
        pool.close()
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
