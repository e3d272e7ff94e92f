-- The end of the mariadb CLI client: current_user must have changed often enough.
CALL expect(LENGTH(@users) - LENGTH(REPLACE(@users, ',', '')) >= @min_changes, CONCAT('current_user changed too rarely: ', @users));
SELECT CONCAT('RESULT client=mariadb-cli iterations=', @iter, ' users=', @users);
