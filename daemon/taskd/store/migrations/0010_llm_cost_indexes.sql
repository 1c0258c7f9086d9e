-- What one tenant cost: client.costs(key=..., since=...) is what application code asks on a
-- user's page, so it reads the tenant's calls along an index instead of every tenant's calls
-- in the range (llm_calls_started_idx). Runs without a concurrency key have none to index.
CREATE INDEX llm_calls_key_idx ON taskd.llm_calls (concurrency_key, started_at)
    WHERE concurrency_key IS NOT NULL;
