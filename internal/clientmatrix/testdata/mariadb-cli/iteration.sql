-- One iteration of the mariadb CLI client; the test has set @iter.
SET @a = CONCAT('cli-', @iter, '-a'), @b = CONCAT('cli-', @iter, '-b'), @c = CONCAT('cli-', @iter, '-c');

-- The backend user the connection runs as now.
SET @cur = SUBSTRING_INDEX(CURRENT_USER(), '@', 1);
CALL expect(FIND_IN_SET(@cur, @backend_users) > 0, CONCAT('current_user ', @cur, ' is not a backend user'));
SET @users = IF(@cur = @prev, @users, CONCAT_WS(',', NULLIF(@users, ''), @cur)), @prev = @cur;

-- The session state from setup is still in force.
CALL expect(@@session.time_zone = '+09:30', CONCAT('time_zone is ', @@session.time_zone));
CALL expect(DATE_FORMAT(FROM_UNIXTIME(0), '%Y-%m-%d %H:%i') = '1970-01-01 09:30', 'FROM_UNIXTIME(0) in the session time zone');
CALL expect(FIND_IN_SET('ANSI_QUOTES', @@session.sql_mode) > 0, CONCAT('sql_mode is ', @@session.sql_mode));
CALL expect(CAST(1/3 AS CHAR) = '0.33333333', CONCAT('1/3 is ', 1/3, ' (div_precision_increment)'));
CALL expect(@@session.character_set_client = 'utf8mb4' AND @@session.character_set_results = 'utf8mb4',
  CONCAT('character sets are ', @@session.character_set_client, '/', @@session.character_set_results));
CALL expect(CHAR_LENGTH('€ ü 😀') = 5, 'characters of a UTF-8 literal');
CALL expect(@client = 'mariadb-cli', CONCAT('@client is ', IFNULL(@client, 'NULL')));

-- A transfer that commits, and one that rolls back.
START TRANSACTION;
INSERT INTO "accounts" ("name", "balance") VALUES (@a, 100), (@b, 0);
UPDATE accounts SET balance = balance - 30.50 WHERE name = @a;
UPDATE accounts SET balance = balance + 30.50 WHERE name = @b;
COMMIT;
START TRANSACTION;
INSERT INTO accounts (name, balance) VALUES (@c, 5);
UPDATE accounts SET balance = 0 WHERE name = @a;
ROLLBACK;
CALL expect((SELECT balance FROM accounts WHERE name = @a) = 69.50
  AND (SELECT balance FROM accounts WHERE name = @b) = 30.50
  AND NOT EXISTS (SELECT 1 FROM accounts WHERE name = @c), 'balances after a commit and a rollback');

-- The SQL prepared statement from setup.
SET @bal = NULL;
EXECUTE balance_of USING @b;
CALL expect(@bal = 30.50, CONCAT('EXECUTE balance_of gave ', IFNULL(@bal, 'NULL')));

-- Errors (counted by the test), each followed by more work.
SELECT * FROM no_such_table;
INSERT INTO accounts (name, balance) VALUES (@a, 1);
CALL expect((SELECT COUNT(*) FROM accounts WHERE name = @a) = 1, 'the duplicate was not inserted');
START TRANSACTION;
UPDATE accounts SET balance = balance - 1 WHERE name = @a;
UPDATE accounts SET balance = balance - 1000 WHERE name = @b;
ROLLBACK;
CALL expect((SELECT balance FROM accounts WHERE name = @a) = 69.50, 'balance after the failed transaction');

-- 1.5 MiB of text and of binary up (big.sql, written by the test), and the
-- text down again (the test compares the BIG line).
source big.sql
SET @doc = LAST_INSERT_ID();
CALL expect((SELECT MD5(body) = @body_md5 AND MD5(data) = @data_md5 FROM documents WHERE id = @doc), 'the large values stored');
SELECT CONCAT('BIG ', body) FROM documents WHERE id = @doc;
DELETE FROM documents WHERE id = @doc;

SELECT CONCAT('ITERATION ', @iter, ' OK ', @cur);
