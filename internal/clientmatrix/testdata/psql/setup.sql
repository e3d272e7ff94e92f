-- The psql client of the matrix (internal/clientmatrix): setup, run once
-- on the connection. The test has set :backend_users and :min_changes.
-- Query results are not needed on stdout: the script checks them itself
-- with app.expect, which raises 'MISMATCH: ...' (and ON_ERROR_STOP ends
-- psql with a non-zero status).
\o /dev/null

-- Session state every iteration relies on.
SET search_path TO app;
SET TIME ZONE 'Asia/Kathmandu';
SET app.client = 'psql';
PREPARE balance_of(text) AS SELECT balance FROM accounts WHERE name = $1;

\set users ''
\set sep ''
\set prev ''
