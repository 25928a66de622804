-- Budgets (docs/budgets.md).
--
-- A budget limit: at most limit_micros in each calendar period (UTC) for the jobs of a project
-- (user_id NULL) or of one of its users, at one provider or (provider NULL) at all of them.
-- PUT /v1/budget and PUT /v1/users/{id}/budget replace a scope's whole set.
CREATE TABLE budget_limits (
    project_id   UUID NOT NULL,
    user_id      UUID,
    provider     TEXT,
    period       TEXT NOT NULL CHECK (period IN ('day', 'week', 'month')),
    limit_micros BIGINT NOT NULL CHECK (limit_micros >= 0),
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX budget_limits_one
    ON budget_limits (project_id, COALESCE(user_id, '00000000-0000-0000-0000-000000000000'::uuid), COALESCE(provider, ''), period);

-- The ledger of the embedded shape (the distributed shape keeps the same figures in Redis).
-- One counter per limit and period, named '<project>:<user or ->:<provider or *>:<period>:<start
-- day>' (so a limit changed or set again keeps its period's figures): what ended jobs spent and
-- what jobs at the provider hold. A counter is made the first time a job needs it, its spent
-- figure summed from job_usage; it is dropped some time after its period ended.
CREATE TABLE budget_counters (
    counter         TEXT PRIMARY KEY NOT NULL,
    spent_micros    BIGINT NOT NULL,
    reserved_micros BIGINT NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX budget_counters_expiry ON budget_counters (expires_at);

-- What each job holds on each counter until it ends. A hold outliving expires_at (its job's end
-- was never settled) counts as spent, the safe side.
CREATE TABLE budget_reservations (
    job_id        UUID NOT NULL,
    counter       TEXT NOT NULL,
    amount_micros BIGINT NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (job_id, counter)
);
CREATE INDEX budget_reservations_expiry ON budget_reservations (counter, expires_at);
