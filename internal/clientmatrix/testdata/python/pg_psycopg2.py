"""The psycopg2 client of the matrix (internal/clientmatrix).

One long-lived connection in psycopg2's default mode (a transaction opened
by the first statement, ended by commit or rollback) with session state
set once: search_path, time zone, a custom setting, a SQL prepared
statement and LISTEN. Each iteration checks that state, transfers money
in a committed and a rolled-back transaction, runs the prepared statement,
recovers from errors, round-trips 1.5 MiB of text and of bytea, notifies
itself, and runs queries on a ThreadedConnectionPool from three threads.
"""

import datetime
import decimal
import select
import sys
import threading
import time

import psycopg2
import psycopg2.errors
import psycopg2.pool

import common
from common import Mismatch, equal, expect

NAME = "psycopg2"
D = decimal.Decimal


def connect(cfg):
    return psycopg2.connect(host=cfg.host, port=cfg.port, user=cfg.user, password=cfg.password,
                            dbname=cfg.database, application_name="cm-" + NAME, connect_timeout=20)


def setup(conn):
    with conn.cursor() as cur:
        cur.execute("SET search_path TO app")
        cur.execute("SET TIME ZONE 'Asia/Kathmandu'")
        cur.execute("SET app.client = %s", (NAME,))
        cur.execute("PREPARE balance_of(text) AS SELECT balance FROM accounts WHERE name = $1")
        cur.execute("LISTEN cm_events")
    conn.commit()


def wait_notification(conn, payload):
    """Wait until payload arrives on cm_events (it may arrive twice across a switch)."""
    deadline = time.monotonic() + 10
    while True:
        if any(n.channel == "cm_events" and n.payload == payload for n in conn.notifies):
            del conn.notifies[:]
            return
        expect(time.monotonic() < deadline, "no notification %r within 10 s" % payload)
        select.select([conn], [], [], 0.5)
        conn.poll()


def pool_work(pool, cfg, i):
    """Three threads each borrow a pooled connection for a small transaction."""
    errors = []

    def worker(k):
        try:
            conn = pool.getconn()
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT current_user, %s::int * 2", (k,))
                    user, doubled = cur.fetchone()
                    expect(user in cfg.backend_users, "pooled current_user %r" % user)
                    equal(doubled, 2 * k, "pooled %d * 2" % k)
                    cur.execute("INSERT INTO app.events (client, note) VALUES (%s, %s)", (NAME, "pool-%d-%d" % (i, k)))
                conn.commit()
            finally:
                pool.putconn(conn)
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
    cur = conn.cursor()

    cur.execute("SELECT current_user, current_setting('search_path'), current_setting('TimeZone'),"
                " current_setting('app.client', true), now()")
    user, search_path, tz, client, now = cur.fetchone()
    conn.commit()
    users.observe(user)
    equal(search_path, "app", "search_path")
    equal(tz, "Asia/Kathmandu", "TimeZone")
    equal(client, NAME, "app.client")
    equal(now.utcoffset(), datetime.timedelta(hours=5, minutes=45), "UTC offset of now()")

    # A transfer that commits, and one that rolls back.
    cur.execute("INSERT INTO accounts (name, balance) VALUES (%s, %s), (%s, %s)", (a, 100, b, 0))
    cur.execute("UPDATE accounts SET balance = balance - %s WHERE name = %s", (D("30.50"), a))
    cur.execute("UPDATE accounts SET balance = balance + %s WHERE name = %s", (D("30.50"), b))
    conn.commit()
    cur.execute("INSERT INTO accounts (name, balance) VALUES (%s, %s)", (c, 5))
    cur.execute("UPDATE accounts SET balance = 0 WHERE name = %s", (a,))
    conn.rollback()
    cur.execute("SELECT name, balance FROM accounts WHERE name IN (%s, %s, %s) ORDER BY name", (a, b, c))
    equal(cur.fetchall(), [(a, D("69.50")), (b, D("30.50"))], "accounts after a commit and a rollback")

    # The SQL prepared statement from setup.
    cur.execute("EXECUTE balance_of(%s)", (b,))
    equal(cur.fetchone(), (D("30.50"),), "EXECUTE balance_of")
    conn.commit()

    # Errors, then the connection goes on.
    try:
        cur.execute("SELECT 1/0")
        raise Mismatch("SELECT 1/0 did not fail")
    except psycopg2.errors.DivisionByZero:
        conn.rollback()
    cur.execute("UPDATE accounts SET balance = balance - 1 WHERE name = %s", (a,))
    try:
        cur.execute("UPDATE accounts SET balance = balance - 1000 WHERE name = %s", (b,))
        raise Mismatch("a negative balance did not violate the CHECK constraint")
    except psycopg2.errors.CheckViolation:
        conn.rollback()
    cur.execute("SELECT balance FROM accounts WHERE name = %s", (a,))
    equal(cur.fetchone(), (D("69.50"),), "balance after the failed transaction")
    conn.commit()

    # 1.5 MiB of text and of bytea, both ways.
    body, data = common.big_text(i), common.big_bytes(i)
    cur.execute("INSERT INTO documents (name, body, data) VALUES (%s, %s, %s) RETURNING id", (a, body, psycopg2.Binary(data)))
    doc = cur.fetchone()[0]
    conn.commit()
    cur.execute("SELECT body, data, octet_length(body) FROM documents WHERE id = %s", (doc,))
    got_body, got_data, size = cur.fetchone()
    equal(size, len(body.encode()), "octet_length of the large text")
    equal(got_body, body, "the large text read back")
    equal(bytes(got_data), data, "the large bytea read back")
    cur.execute("DELETE FROM documents WHERE id = %s", (doc,))
    conn.commit()

    # A notification to itself, on the channel it listens to since setup.
    cur.execute("SELECT pg_notify('cm_events', %s)", (a,))
    conn.commit()
    wait_notification(conn, a)

    pool_work(pool, cfg, i)
    cur.close()


def main():
    cfg = common.Config()
    conn = connect(cfg)
    setup(conn)
    pool = psycopg2.pool.ThreadedConnectionPool(
        1, 3, host=cfg.host, port=cfg.port, user=cfg.user, password=cfg.password, dbname=cfg.database,
        application_name="cm-%s-pool" % NAME, connect_timeout=20)
    try:
        common.run(NAME, cfg, lambda i, users: iteration(conn, pool, cfg, i, users))
    finally:
        pool.closeall()
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
