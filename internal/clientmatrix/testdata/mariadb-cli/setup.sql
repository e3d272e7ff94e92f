-- The mariadb CLI client of the matrix (internal/clientmatrix): setup, run
-- once on the connection. The test has set @backend_users, @min_changes,
-- @body_md5 and @data_md5. The CLI runs with --force, so an error does not
-- end it: the test counts the errors it printed, which must be exactly the
-- three each iteration provokes (1146, 1062, 4025); a failed check is a
-- 'MISMATCH: ...' error from the procedure expect (1644).

-- Session state every iteration relies on.
SET time_zone = '+09:30';
SET sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION';
SET div_precision_increment = 8;
SET @client = 'mariadb-cli', @users = '', @prev = '';
PREPARE balance_of FROM 'SELECT "balance" INTO @bal FROM "accounts" WHERE "name" = ?';
