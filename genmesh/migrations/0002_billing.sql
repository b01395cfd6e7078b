-- Billing: price history and the usage ledger (one row per finished request, written once).

-- Every price ever set. The price in force for (model, machine type, unit) at an instant is the
-- row with the latest effective_from not after it; rows are only ever added.
CREATE TABLE prices (
    id              bigserial PRIMARY KEY,
    model_id        text NOT NULL,            -- '' with machine_type set: default for every app
    machine_type    text NOT NULL DEFAULT '',
    unit            text NOT NULL,
    unit_price      double precision NOT NULL CHECK (unit_price >= 0),
    per             double precision NOT NULL DEFAULT 1 CHECK (per > 0),
    currency        text NOT NULL DEFAULT 'USD',
    effective_from  timestamptz NOT NULL DEFAULT now(),
    source          text NOT NULL DEFAULT 'admin',  -- catalog (seeded at start) | admin (SetPrice)
    set_by          text,                           -- api key id of the admin who set it
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (model_id <> '' OR machine_type <> '')
);
CREATE INDEX prices_in_force ON prices (model_id, machine_type, unit, effective_from DESC);

-- The usage ledger. request_id is the primary key, so a redelivered or re-published usage
-- record is a no-op. `cost` (currency) is what the request was charged; `prices` holds, per
-- billed unit, the quantity and the price in force at finished_at, so later price changes never
-- rewrite history. The router's budget check sums `cost` per `api_key_id`.
CREATE TABLE ledger (
    request_id    text PRIMARY KEY,
    model_id      text NOT NULL,
    api_key_id    text NOT NULL,
    status        text NOT NULL,                  -- COMPLETED | FAILED | CANCELLED
    mode          text NOT NULL DEFAULT '',       -- sync | stream | queue
    machine_type  text NOT NULL DEFAULT '',
    usage         jsonb NOT NULL DEFAULT '[]',    -- [{unit, quantity}] as reported
    cost          double precision NOT NULL DEFAULT 0,
    currency      text NOT NULL DEFAULT 'USD',
    prices        jsonb NOT NULL DEFAULT '[]',    -- [{unit, quantity, unit_price, per, currency,
                                                  --   cost, priced, effective_from}]
    error         text NOT NULL DEFAULT '',
    error_type    text NOT NULL DEFAULT '',
    created_at    timestamptz,
    started_at    timestamptz,
    finished_at   timestamptz NOT NULL,
    queue_time_s  double precision NOT NULL DEFAULT 0,
    run_time_s    double precision NOT NULL DEFAULT 0,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
-- Request logs page newest first over (finished_at, request_id), overall and per key.
CREATE INDEX ledger_finished ON ledger (finished_at DESC, request_id DESC);
CREATE INDEX ledger_key_finished ON ledger (api_key_id, finished_at DESC, request_id DESC);
CREATE INDEX ledger_model_finished ON ledger (model_id, finished_at);
