-- The virtual clock of a test database (taskd.testing), never installed in production.
--
-- taskd's SQL and its plpgsql functions call now() and clock_timestamp() unqualified and set no
-- search_path of their own. The test database's search_path names this schema BEFORE
-- pg_catalog (`ALTER DATABASE ... SET search_path = taskd_clock, pg_catalog, "$user", public`):
-- a pg_catalog named explicitly in the path is searched where it stands, so these functions
-- shadow the built-in ones for every statement of every session on that database. Column
-- DEFAULT now() expressions were bound to pg_catalog.now() when the table was created (a name
-- in a stored expression is resolved once): the end of this file points them here. The SQL
-- keywords CURRENT_TIMESTAMP, LOCALTIMESTAMP... are not function calls and cannot be
-- shadowed: taskd's SQL uses none.

CREATE SCHEMA taskd_clock;

CREATE TABLE taskd_clock.skew (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    amount interval NOT NULL DEFAULT '0'
);
INSERT INTO taskd_clock.skew DEFAULT VALUES;

COMMENT ON TABLE taskd_clock.skew IS
    'How far this test database''s clock is ahead of real time (tester.advance moves it).';

CREATE FUNCTION taskd_clock.now() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT pg_catalog.now() + s.amount FROM taskd_clock.skew s $$;

CREATE FUNCTION taskd_clock.transaction_timestamp() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT pg_catalog.transaction_timestamp() + s.amount FROM taskd_clock.skew s $$;

CREATE FUNCTION taskd_clock.statement_timestamp() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT pg_catalog.statement_timestamp() + s.amount FROM taskd_clock.skew s $$;

CREATE FUNCTION taskd_clock.clock_timestamp() RETURNS timestamptz
    LANGUAGE sql VOLATILE PARALLEL SAFE
    AS $$ SELECT pg_catalog.clock_timestamp() + s.amount FROM taskd_clock.skew s $$;

-- The columns of taskd's tables that default to the time of the insert (a run's created_at, a
-- schedule's created_at, a worker's heartbeat_at...) take the virtual time too, in this test
-- database only: a schedule created after the clock moved counts its fire times from then.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT table_name, column_name, column_default
          FROM information_schema.columns
         WHERE table_schema = 'taskd' AND column_default IN ('now()', 'clock_timestamp()')
    LOOP
        EXECUTE format('ALTER TABLE taskd.%I ALTER COLUMN %I SET DEFAULT taskd_clock.%s',
                       c.table_name, c.column_name, c.column_default);
    END LOOP;
END
$$;
