-- binfarm coordinator state, first schema.
-- Times are Unix seconds (UTC); durations are milliseconds.
-- Snapshots and channels (issue 5) come in a later migration.

CREATE TABLE blobs (
    sha512     TEXT PRIMARY KEY NOT NULL,          -- lowercase hex, 128 chars
    size       INTEGER NOT NULL CHECK (size >= 0),
    kind       TEXT NOT NULL,                      -- 'binpkg', 'log', ...
    created_at INTEGER NOT NULL
);

CREATE TABLE workers (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    token_sha256         TEXT NOT NULL,            -- sha256 of the token; the token is never stored
    capabilities         TEXT NOT NULL DEFAULT '{}',  -- JSON as reported by the worker
    labels               TEXT NOT NULL DEFAULT '[]',  -- JSON array of strings
    last_heartbeat       INTEGER,
    paused               INTEGER NOT NULL DEFAULT 0,
    paused_reason        TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    created_at           INTEGER NOT NULL
);

-- Which profiles a worker can build (from its reported capabilities).
CREATE TABLE worker_profiles (
    worker_id INTEGER NOT NULL REFERENCES workers(id) ON DELETE CASCADE,
    profile   TEXT NOT NULL,
    PRIMARY KEY (worker_id, profile)
);

CREATE TABLE requests (
    id               INTEGER PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('nightly', 'manual')),
    profile          TEXT NOT NULL,
    target           TEXT NOT NULL,                -- a set ('@world') or an atom
    state            TEXT NOT NULL CHECK (state IN
                       ('planning', 'running', 'succeeded', 'failed', 'cancelled')),
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER
);
CREATE INDEX requests_by_state ON requests(state);

CREATE TABLE steps (
    id               INTEGER PRIMARY KEY,
    request_id       INTEGER NOT NULL REFERENCES requests(id),
    cpv              TEXT NOT NULL,
    slot             TEXT NOT NULL,
    repo             TEXT NOT NULL,
    profile          TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    use_flags        TEXT NOT NULL,                -- JSON array of strings
    state            TEXT NOT NULL CHECK (state IN
                       ('queued', 'ready', 'leased', 'building', 'succeeded', 'failed',
                        'blocked', 'cancelled', 'cached')),
    -- Why the step is blocked or failed (names the failed dependency's CPV).
    reason           TEXT,
    -- Position in the scheduling order computed by the planner (0 goes first).
    sched_rank       INTEGER NOT NULL,
    estimated_ms     INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL DEFAULT 0,
    force_build      INTEGER NOT NULL DEFAULT 0,   -- manual rebuild: build even if known
    lease_id         INTEGER,                      -- changes on every lease
    lease_worker_id  INTEGER REFERENCES workers(id),
    lease_expires_at INTEGER,
    build_id         INTEGER,                      -- reserved at first lease
    started_at       INTEGER,
    finished_at      INTEGER,
    duration_ms      INTEGER,
    log_blob         TEXT REFERENCES blobs(sha512),
    UNIQUE (request_id, cpv)
);
-- Partial indexes stay small however many finished steps accumulate.
CREATE INDEX steps_ready ON steps(profile, sched_rank, request_id) WHERE state = 'ready';
CREATE INDEX steps_leased ON steps(lease_expires_at) WHERE state IN ('leased', 'building');
CREATE INDEX steps_by_request ON steps(request_id, state);
CREATE INDEX steps_by_lease ON steps(lease_worker_id) WHERE lease_worker_id IS NOT NULL;

-- Edge: step_id needs dep_step_id built first. Both steps are in the same request.
CREATE TABLE step_deps (
    step_id     INTEGER NOT NULL REFERENCES steps(id),
    dep_step_id INTEGER NOT NULL REFERENCES steps(id),
    PRIMARY KEY (step_id, dep_step_id)
);
CREATE INDEX step_deps_reverse ON step_deps(dep_step_id);

-- Files a step produced (binpkgs), by blob.
CREATE TABLE step_results (
    step_id INTEGER NOT NULL REFERENCES steps(id),
    name    TEXT NOT NULL,                         -- e.g. 'app-misc/hello/hello-1.0-1.gpkg.tar'
    blob    TEXT NOT NULL REFERENCES blobs(sha512),
    PRIMARY KEY (step_id, name)
);

-- Every finished build of a fingerprint: what nightly skipping looks at.
CREATE TABLE builds (
    id          INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    profile     TEXT NOT NULL,
    cpv         TEXT NOT NULL,
    build_id    INTEGER NOT NULL,
    result      TEXT NOT NULL CHECK (result IN ('succeeded', 'failed')),
    step_id     INTEGER REFERENCES steps(id),
    binpkg_blob TEXT REFERENCES blobs(sha512),
    duration_ms INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX builds_by_fingerprint ON builds(fingerprint, result);
CREATE INDEX builds_by_cpv ON builds(profile, cpv, build_id);

-- The last BUILD_ID handed out per profile and CPV: never reused, so a file name
-- '<pf>-<build_id>.gpkg.tar' is never used for other bytes.
CREATE TABLE build_ids (
    profile       TEXT NOT NULL,
    cpv           TEXT NOT NULL,
    last_build_id INTEGER NOT NULL,
    PRIMARY KEY (profile, cpv)
);

-- One row per lease of a step: the lease id the worker holds is this row's id.
-- Completing an attempt twice is recognised here (idempotent completion).
CREATE TABLE step_attempts (
    id          INTEGER PRIMARY KEY,
    step_id     INTEGER NOT NULL REFERENCES steps(id),
    worker_id   INTEGER NOT NULL REFERENCES workers(id),
    leased_at   INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT CHECK (outcome IN ('succeeded', 'failed', 'expired', 'cancelled')),
    error       TEXT,
    duration_ms INTEGER,
    log_blob    TEXT REFERENCES blobs(sha512)
);
CREATE INDEX step_attempts_by_step ON step_attempts(step_id);
