// The mysql2 client of the matrix (internal/clientmatrix).
//
// One long-lived connection (promise API) that logs in with
// caching_sha2_password (mysql2 asks for the proxy's RSA key), with session
// state set once (time_zone, sql_mode with ANSI_QUOTES, SET NAMES with a
// collation other than the server's, a user variable). Each iteration
// checks that state, runs server-side prepared statements (execute, cached
// by mysql2 per connection and reused in every iteration) and text
// queries, a transaction that commits and one that rolls back, errors
// followed by more work, 1.5 MiB of text and binary both ways, and six
// queries at once on a pool of three connections.
'use strict';

const mysql = require('mysql2/promise');
const { expect, equal, config, run, bigText, bigBytes, fails, main } = require('./common');

const NAME = 'mysql2';

main(async () => {
  const cfg = config();
  const login = {
    host: cfg.host, port: cfg.port, user: cfg.user, password: cfg.password, database: cfg.database,
    charset: 'UTF8MB4_UNICODE_CI', connectTimeout: 20000, dateStrings: true, decimalNumbers: false,
  };
  const conn = await mysql.createConnection(login);
  const pool = mysql.createPool({ ...login, connectionLimit: 3 });

  await conn.query("SET time_zone = '+12:45'");
  await conn.query("SET sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'");
  await conn.query('SET NAMES utf8mb4 COLLATE utf8mb4_unicode_520_ci');
  await conn.query('SET @client = ?', [NAME]);

  const balanceOf = async (who) => (await conn.execute('SELECT "balance" FROM "accounts" WHERE "name" = ?', [who]))[0];
  const move = (amount, who) => conn.execute('UPDATE "accounts" SET "balance" = "balance" + ? WHERE "name" = ?', [amount, who]);

  await run(NAME, cfg, async (i, users) => {
    const [a, b, c] = ['a', 'b', 'c'].map((x) => `${NAME}-${i}-${x}`);
    const [[st]] = await conn.execute(
      "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1) AS u, @@session.time_zone AS tz,"
      + " DATE_FORMAT(FROM_UNIXTIME(0), '%Y-%m-%d %H:%i') AS epoch, @@session.sql_mode AS mode,"
      + " @@session.collation_connection AS coll, @client AS client, CONCAT(?, ' ', ?) AS text",
      [`€ ü${i}`, '😀'],
    );
    users.observe(st.u);
    equal(st.tz, '+12:45', 'time_zone');
    equal(st.epoch, '1970-01-01 12:45', 'FROM_UNIXTIME(0)');
    expect(st.mode.split(',').includes('ANSI_QUOTES'), `sql_mode is ${st.mode}`);
    equal(st.coll, 'utf8mb4_unicode_520_ci', 'collation_connection');
    equal(String(st.client), NAME, '@client');
    equal(st.text, `€ ü${i} 😀`, 'UTF-8 round trip');

    // A transfer that commits, and one that rolls back.
    await conn.beginTransaction();
    await conn.execute('INSERT INTO "accounts" ("name", "balance") VALUES (?, ?), (?, ?)', [a, 100, b, 0]);
    await move('-30.50', a);
    await move('30.50', b);
    await conn.commit();
    await conn.beginTransaction();
    await conn.query('INSERT INTO accounts (name, balance) VALUES (?, ?)', [c, 5]);
    await conn.query('UPDATE accounts SET balance = 0 WHERE name = ?', [a]);
    await conn.rollback();
    const [rows] = await conn.query('SELECT name, balance FROM accounts WHERE name IN (?) ORDER BY name', [[a, b, c]]);
    equal(rows, [{ name: a, balance: '69.50' }, { name: b, balance: '30.50' }], 'accounts after a commit and a rollback');
    equal(await balanceOf(b), [{ balance: '30.50' }], 'prepared balance');

    // Errors, then the connection goes on.
    await fails(conn.query('SELECT * FROM no_such_table'), (e) => e.errno === 1146, 'a missing table');
    await fails(conn.execute('INSERT INTO accounts (name, balance) VALUES (?, ?)', [a, 1]), (e) => e.errno === 1062, 'a duplicate key');
    await conn.beginTransaction();
    await move('-1', a);
    await fails(move('-1000', b), (e) => e.errno === 4025, 'a CHECK violation');
    await conn.rollback();
    equal(await balanceOf(a), [{ balance: '69.50' }], 'balance after the failed transaction');

    // 1.5 MiB of text and of binary, both ways, through the binary and the text protocol.
    const body = bigText(i);
    const data = bigBytes(i);
    const [ins] = await conn.execute('INSERT INTO documents (name, body, data) VALUES (?, ?, ?)', [a, body, data]);
    const [[viaExecute]] = await conn.execute('SELECT body, data FROM documents WHERE id = ?', [ins.insertId]);
    equal(viaExecute.body, body, 'the large text read back (execute)');
    equal(viaExecute.data, data, 'the large binary read back (execute)');
    const [[viaQuery]] = await conn.query('SELECT body, data FROM documents WHERE id = ?', [ins.insertId]);
    equal(viaQuery.body, body, 'the large text read back (query)');
    equal(viaQuery.data, data, 'the large binary read back (query)');
    await conn.execute('DELETE FROM documents WHERE id = ?', [ins.insertId]);

    // The pool, six queries at once on at most three connections.
    const results = await Promise.all([0, 1, 2, 3, 4, 5].map((k) => pool.execute("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1) AS u, ? * 2 AS d", [k])));
    results.forEach(([[r]], k) => {
      expect(cfg.backendUsers.includes(r.u), `pooled current_user ${r.u}`);
      equal(Number(r.d), 2 * k, `pooled ${k} * 2`);
    });
  });
  await pool.end();
  await conn.end();
});
