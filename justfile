# Developer recipes. `just --list` shows them. CI runs `.ci/run`.

default:
    @just --list

# Format every crate.
fmt:
    cargo fmt --all

# Clippy with warnings denied, as CI runs it.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# The whole test suite (real PostgreSQL and Redis when available; see DEVELOPERS.md).
test:
    cargo test --workspace --locked

# Exactly what CI runs.
ci:
    .ci/run

# The chaos suite's long form (docs/chaos.md): `seconds` of random faults on each topology
# (single Redis, Redis Cluster; both at once), then each prints its table. Replay a run's
# choices with BYOK_CHAOS_SEED=<seed> just chaos.
chaos seconds="600":
    BYOK_CHAOS_SECONDS={{seconds}} BYOK_TEST_SERVICES=required cargo test -p byok --test chaos --locked -- --nocapture

# Start the local Redis and PostgreSQL used by the tests.
services:
    redis-cli -h 127.0.0.1 -p 6379 ping || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    pg_isready -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n 1) main start

# Serve the API on the embedded shape (SQLite in ./byok-data).
api:
    cargo run --release -- api

# Apply migrations to the configured database.
migrate:
    cargo run --release -- migrate
