-- The workers the embedded queue has seen (the dashboard's "workers seen recently"): each
-- consumer notes itself when it opens and at each maintenance pass, and removes itself when it
-- closes; a row not renewed for an hour (its process died) is dropped at the next pass of any
-- consumer of the namespace. Redis keeps the same facts in its consumer group.
CREATE TABLE queue_consumers (
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    seen_at   INTEGER NOT NULL CHECK (typeof(seen_at) = 'integer'),
    PRIMARY KEY (namespace, name)
);
