-- The embedded shape's work queue (byok-queue's SqliteEngine; crates/queue/README.md describes
-- it). One row per queue entry; several queues (namespaces) may share the file. Times are unix
-- milliseconds from the clock of the process that owns the file.
--
-- `seq` names one entry for its whole life and is never reused (AUTOINCREMENT): it is the
-- delivery handle a worker settles by, so a reschedule, a retry, a hand-back or a dead letter
-- writes a new row rather than reviving the old one, exactly as the Redis engine writes a new
-- stream entry. A stale settlement can then never touch a later delivery of the same item.
--
-- `run_at` is when a ready entry falls due, when a running entry was delivered, and when a dead
-- entry died. Completed entries are deleted; dead ones are kept up to `queue.dead_retention`.
-- The CHECK constraints keep the invariants the claim queries rely on (a running entry always
-- has a lease; every time is an integer), even against hand edits.

CREATE TABLE queue_items (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace    TEXT NOT NULL,
    item_id      TEXT NOT NULL,
    payload      TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('ready', 'running', 'dead')),
    run_at       INTEGER NOT NULL CHECK (typeof(run_at) = 'integer'),
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (typeof(attempts) = 'integer'),
    deliveries   INTEGER NOT NULL DEFAULT 0 CHECK (typeof(deliveries) = 'integer'),
    lease_owner  TEXT,
    lease_until  INTEGER CHECK (lease_until IS NULL OR typeof(lease_until) = 'integer'),
    enqueued_at  INTEGER NOT NULL,
    last_error   TEXT,
    reason       TEXT,
    died_at      INTEGER CHECK (died_at IS NULL OR typeof(died_at) = 'integer'),
    CHECK (state <> 'running' OR (lease_owner IS NOT NULL AND lease_until IS NOT NULL)),
    CHECK (state <> 'dead' OR died_at IS NOT NULL)
);

-- Claims: the due ready entries of a namespace, oldest due first (seq, the rowid, is the
-- index's implicit last column, so `ORDER BY run_at, seq` needs no sort). Also serves the
-- pending/scheduled counts and listings and the next due time.
CREATE INDEX queue_items_ready ON queue_items (namespace, run_at) WHERE state = 'ready';
-- Crash recovery: running entries whose lease expired; also the running count.
CREATE INDEX queue_items_running ON queue_items (namespace, lease_until) WHERE state = 'running';
-- Dead letters newest first, retention trimming oldest first, retry of all.
CREATE INDEX queue_items_dead ON queue_items (namespace, died_at) WHERE state = 'dead';
