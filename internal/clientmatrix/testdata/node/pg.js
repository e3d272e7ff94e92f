// The node-postgres client of the matrix (internal/clientmatrix).
//
// One long-lived pg.Client with session state set once (search_path, time
// zone, a custom setting, LISTEN). Each iteration checks that state, runs
// parameterised queries and named prepared statements (pg's
// {name, text, values}), a transaction that commits and one that rolls
// back, errors followed by more work, 1.5 MiB of text and bytea both ways,
// a notification to itself, and concurrent queries on a pg.Pool.
'use strict';

const { Client, Pool } = require('pg');
const { expect, equal, config, run, bigText, bigBytes, fails, main } = require('./common');

const NAME = 'node-postgres';

main(async () => {
  const cfg = config();
  const login = {
    host: cfg.host, port: cfg.port, user: cfg.user, password: cfg.password, database: cfg.database,
    connectionTimeoutMillis: 20000,
  };
  const conn = new Client({ ...login, application_name: `cm-${NAME}` });
  await conn.connect();
  const pool = new Pool({ ...login, application_name: `cm-${NAME}-pool`, max: 3 });
  const notes = [];
  conn.on('notification', (msg) => notes.push(msg));

  await conn.query('SET search_path TO app');
  await conn.query("SET TIME ZONE 'Pacific/Chatham'");
  await conn.query(`SET app.client = '${NAME}'`);
  await conn.query('LISTEN cm_events');

  const balanceOf = (who) => conn.query({ name: 'balance-of', text: 'SELECT balance FROM accounts WHERE name = $1', values: [who] });
  const move = (amount, who) => conn.query({ name: 'move', text: 'UPDATE accounts SET balance = balance + $1 WHERE name = $2', values: [amount, who] });

  await run(NAME, cfg, async (i, users) => {
    const [a, b, c] = ['a', 'b', 'c'].map((x) => `${NAME}-${i}-${x}`);
    const { rows: [st] } = await conn.query({
      name: 'state',
      text: "SELECT current_user AS u, current_setting('search_path') AS sp, current_setting('TimeZone') AS tz,"
        + " current_setting('app.client', true) AS client,"
        + " to_char($1::timestamptz, 'YYYY-MM-DD HH24:MI TZH:TZM') AS local",
      values: ['2024-01-01T00:00:00Z'],
    });
    users.observe(st.u);
    equal(st.sp, 'app', 'search_path');
    equal(st.tz, 'Pacific/Chatham', 'TimeZone');
    equal(st.client, NAME, 'app.client');
    equal(st.local, '2024-01-01 13:45 +13:45', 'local time of 2024-01-01 00:00 UTC');

    // A transfer that commits, and one that rolls back.
    await conn.query('BEGIN');
    await conn.query('INSERT INTO accounts (name, balance) VALUES ($1, $2), ($3, $4)', [a, 100, b, 0]);
    await move('-30.50', a);
    await move('30.50', b);
    await conn.query('COMMIT');
    await conn.query('BEGIN');
    await conn.query('INSERT INTO accounts (name, balance) VALUES ($1, $2)', [c, 5]);
    await conn.query('UPDATE accounts SET balance = 0 WHERE name = $1', [a]);
    await conn.query('ROLLBACK');
    const { rows } = await conn.query('SELECT name, balance FROM accounts WHERE name = ANY($1) ORDER BY name', [[a, b, c]]);
    equal(rows, [{ name: a, balance: '69.50' }, { name: b, balance: '30.50' }], 'accounts after a commit and a rollback');
    equal((await balanceOf(b)).rows, [{ balance: '30.50' }], 'prepared balance-of');
    const { rows: [{ n }] } = await conn.query("SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name IN ('balance-of', 'move', 'state')");
    equal(n, 3, 'named statements on the server');

    // Errors, then the connection goes on.
    await fails(conn.query('SELECT 1/0'), (e) => e.code === '22012', 'SELECT 1/0');
    await conn.query('BEGIN');
    await move('-1', a);
    await fails(move('-1000', b), (e) => e.code === '23514', 'a negative balance');
    await conn.query('ROLLBACK');
    equal((await balanceOf(a)).rows, [{ balance: '69.50' }], 'balance after the failed transaction');

    // 1.5 MiB of text and of bytea, both ways.
    const body = bigText(i);
    const data = bigBytes(i);
    const { rows: [{ id }] } = await conn.query('INSERT INTO documents (name, body, data) VALUES ($1, $2, $3) RETURNING id', [a, body, data]);
    const { rows: [doc] } = await conn.query('SELECT body, data FROM documents WHERE id = $1', [id]);
    equal(doc.body, body, 'the large text read back');
    equal(doc.data, data, 'the large bytea read back');
    await conn.query('DELETE FROM documents WHERE id = $1', [id]);

    // A notification to itself, on the channel it listens to since the start.
    await conn.query("SELECT pg_notify('cm_events', $1)", [a]);
    for (let waited = 0; !notes.some((m) => m.channel === 'cm_events' && m.payload === a); waited += 20) {
      expect(waited < 10000, `no notification ${a} within 10 s`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    notes.length = 0;

    // The pool, six queries at once on at most three connections.
    const results = await Promise.all([0, 1, 2, 3, 4, 5].map((k) => pool.query('SELECT current_user AS u, $1::int * 2 AS d', [k])));
    results.forEach((r, k) => {
      expect(cfg.backendUsers.includes(r.rows[0].u), `pooled current_user ${r.rows[0].u}`);
      equal(r.rows[0].d, 2 * k, `pooled ${k} * 2`);
    });
  });
  await pool.end();
  await conn.end();
});
