-- The end of the psql client: current_user must have changed often enough.
SELECT app.expect(cardinality(string_to_array(:'users', ',')) - 1 >= :min_changes,
  'current_user changed fewer than ' || :min_changes || ' times: ' || :'users');
\echo RESULT client=psql iterations=:iter users=:users
