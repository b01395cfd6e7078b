-- Jobs (the durable queue's state), webhook delivery attempts, and API keys.
CREATE TABLE jobs (
    id                text PRIMARY KEY,
    model_id          text NOT NULL,
    service           text NOT NULL,
    api_key_id        text NOT NULL,
    status            text NOT NULL,
    priority          text NOT NULL DEFAULT 'normal',
    mode              text NOT NULL DEFAULT 'queue',
    input             jsonb NOT NULL,
    output            jsonb,
    usage             jsonb,
    error             text,
    error_type        text,
    idempotency_key   text,
    webhook_url       text,
    start_timeout_s   double precision,
    run_timeout_s     double precision,
    attempts          integer NOT NULL DEFAULT 0,
    claimed_by        text,
    lease_until       timestamptz,
    progress          jsonb,
    logs              jsonb NOT NULL DEFAULT '[]'::jsonb,
    cancel_requested  boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    expires_at        timestamptz
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (api_key_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_waiting ON jobs (service, created_at) WHERE status = 'IN_QUEUE';
CREATE INDEX jobs_key_created ON jobs (api_key_id, created_at);
CREATE INDEX jobs_expires ON jobs (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE webhook_deliveries (
    id            bigserial PRIMARY KEY,
    request_id    text NOT NULL,
    attempt       integer NOT NULL,
    url           text NOT NULL,
    status_code   integer NOT NULL DEFAULT 0,
    error         text,
    attempted_at  timestamptz NOT NULL DEFAULT now(),
    duration_s    double precision NOT NULL DEFAULT 0
);
CREATE INDEX webhook_deliveries_request ON webhook_deliveries (request_id, attempt);

CREATE TABLE api_keys (
    id                     text PRIMARY KEY,
    name                   text NOT NULL DEFAULT '',
    scope                  text NOT NULL,
    prefix                 text NOT NULL,
    secret_hash            text NOT NULL UNIQUE,
    created_at             timestamptz NOT NULL DEFAULT now(),
    revoked_at             timestamptz,
    spend_limit            double precision,
    rate_limit_per_minute  double precision
);
