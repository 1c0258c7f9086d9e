-- A streaming replica the admin API and the CLI read from ([admin] read_url), and how far it
-- is behind its primary. Loaded by store/replica.py (store/queries.py: blocks headed
-- `-- name: NAME`).

-- name: primary_position
-- Where the primary's WAL is now (text: asyncpg has no pg_lsn codec); NULL on a server in
-- recovery (a replica asked by mistake, or a primary being demoted).
SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END

-- name: replica_lag
-- The replica's distance to the primary position $1 (read on the primary just before): bytes
-- of WAL not replayed yet, and seconds since the primary committed the last transaction the
-- replica replayed (0 when nothing is left to replay: an idle primary does not make a replica
-- look late). in_recovery false: the server is no replica (promoted, or read_url names a
-- primary): no lag.
SELECT
    in_recovery,
    CASE WHEN in_recovery THEN GREATEST(0, pg_wal_lsn_diff($1::text::pg_lsn, replayed))::bigint END
        AS bytes,
    CASE
        WHEN NOT in_recovery THEN NULL
        WHEN replayed >= $1::text::pg_lsn THEN 0.0
        ELSE GREATEST(0, extract(epoch FROM clock_timestamp() - replayed_at))::float8
    END AS seconds
FROM (
    SELECT
        pg_is_in_recovery() AS in_recovery,
        pg_last_wal_replay_lsn() AS replayed,
        pg_last_xact_replay_timestamp() AS replayed_at
) AS replica
