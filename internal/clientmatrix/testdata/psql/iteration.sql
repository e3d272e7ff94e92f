-- One iteration of the psql client; the test has set :iter.
\set a 'psql-' :iter '-a'
\set b 'psql-' :iter '-b'
\set c 'psql-' :iter '-c'

-- The backend user the connection runs as now.
SELECT current_user AS cur \gset
SELECT app.expect(:'cur' = ANY (string_to_array(:'backend_users', ',')), 'current_user ' || :'cur' || ' is not a backend user');
SELECT :'cur' <> :'prev' AS changed \gset
\if :changed
\set users :users :sep :cur
\set sep ','
\set prev :cur
\endif

-- The session state from setup is still in force.
SELECT app.expect(current_setting('search_path') = 'app', 'search_path is ' || current_setting('search_path'));
SELECT app.expect(current_setting('TimeZone') = 'Asia/Kathmandu', 'TimeZone is ' || current_setting('TimeZone'));
SELECT app.expect(to_char(timestamptz '2024-01-01 00:00:00+00', 'YYYY-MM-DD HH24:MI TZH:TZM') = '2024-01-01 05:45 +05:45', 'local time of 2024-01-01 00:00 UTC');
SELECT app.expect(current_setting('app.client', true) IS NOT DISTINCT FROM 'psql', 'app.client is ' || coalesce(current_setting('app.client', true), 'not set'));
SELECT app.expect(current_setting('application_name') = 'cm-psql', 'application_name is ' || current_setting('application_name'));

-- A transfer that commits, and one that rolls back.
BEGIN;
INSERT INTO accounts (name, balance) VALUES (:'a', 100), (:'b', 0);
UPDATE accounts SET balance = balance - 30.5 WHERE name = :'a';
UPDATE accounts SET balance = balance + 30.5 WHERE name = :'b';
COMMIT;
BEGIN;
INSERT INTO accounts (name, balance) VALUES (:'c', 5);
UPDATE accounts SET balance = 0 WHERE name = :'a';
ROLLBACK;
SELECT app.expect((SELECT balance FROM accounts WHERE name = :'a') = 69.5
  AND (SELECT balance FROM accounts WHERE name = :'b') = 30.5
  AND NOT EXISTS (SELECT FROM accounts WHERE name = :'c'), 'balances after a commit and a rollback');

-- The SQL prepared statement from setup.
EXECUTE balance_of(:'b') \gset bal_
SELECT app.expect(:'bal_balance' = '30.50', 'EXECUTE balance_of gave ' || :'bal_balance');

-- An error, then the connection goes on.
\set ON_ERROR_STOP 0
SELECT 1/0;
\set ON_ERROR_STOP 1
SELECT app.expect(:'SQLSTATE' = '22012', 'SQLSTATE after 1/0 is ' || :'SQLSTATE');

-- An error inside a transaction, which then rolls back.
BEGIN;
UPDATE accounts SET balance = balance - 1 WHERE name = :'a';
\set ON_ERROR_STOP 0
UPDATE accounts SET balance = balance - 1000 WHERE name = :'b';
\set err :SQLSTATE
\set ON_ERROR_STOP 1
ROLLBACK;
SELECT app.expect(:'err' = '23514', 'SQLSTATE of a CHECK violation is ' || :'err');
SELECT app.expect((SELECT balance FROM accounts WHERE name = :'a') = 69.5, 'balance after the failed transaction');

-- A value of 1.6 MB from the server into a psql variable, back to the
-- server in an INSERT, and back again in the comparison.
SELECT string_agg(md5(i::text || :'iter'), '') AS big FROM generate_series(1, 50000) AS i \gset
INSERT INTO documents (name, body, data) VALUES (:'a', :'big', convert_to(:'big', 'UTF8')) RETURNING id AS doc \gset
SELECT body AS back FROM documents WHERE id = :doc \gset
SELECT app.expect(length(:'back') = 1600000 AND :'back' = :'big', 'the large value read back');
SELECT app.expect(data = convert_to(:'big', 'UTF8'), 'the large bytea') FROM documents WHERE id = :doc;
DELETE FROM documents WHERE id = :doc;

\echo ITERATION :iter OK :cur
