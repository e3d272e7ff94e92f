-- The tables every PostgreSQL client program of the matrix works on, made
-- by the test (as the superuser) in a fresh database before the program
-- runs; the test grants them to both backend users. The programs reach
-- them without a schema name through SET search_path TO app.
CREATE SCHEMA app;

CREATE TABLE app.accounts (
  id      serial PRIMARY KEY,
  name    text NOT NULL UNIQUE,
  balance numeric(12, 2) NOT NULL CHECK (balance >= 0)
);

CREATE TABLE app.documents (
  id   serial PRIMARY KEY,
  name text NOT NULL,
  body text NOT NULL,
  data bytea NOT NULL
);

CREATE TABLE app.events (
  id     bigserial PRIMARY KEY,
  at     timestamptz NOT NULL DEFAULT now(),
  client text NOT NULL,
  note   text NOT NULL
);

-- expect raises 'MISMATCH: <what>' unless ok is true: the psql script
-- asserts with it.
CREATE FUNCTION app.expect(ok boolean, what text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF ok IS NOT TRUE THEN
    RAISE EXCEPTION 'MISMATCH: %', what;
  END IF;
END
$$;
