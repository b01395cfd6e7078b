-- Stored Responses API objects (/v1/responses): the answer as the edge renders it and the
-- conversation that produced it, so previous_response_id carries the whole context (tool calls
-- included) on any replica, after restarts. One key's rows are invisible to every other key.
CREATE TABLE responses (
    id          text PRIMARY KEY,
    api_key_id  text NOT NULL,
    response    jsonb NOT NULL,
    context     jsonb NOT NULL,
    job_id      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX responses_expires ON responses (expires_at);
CREATE INDEX responses_key_created ON responses (api_key_id, created_at);
