-- A queued job keeps its validated request as the typed message's bytes (request_type names the
-- message), so the queue runner sends them to the worker as they are: no JSON rebuilt, nothing
-- validated twice. `input` (jsonb) stays for apps (their body is checked against the schema of the
-- app version that runs it) and for jobs stored before this migration, which still run from it.
ALTER TABLE jobs ADD COLUMN request bytea;
ALTER TABLE jobs ADD COLUMN request_type text;
ALTER TABLE jobs ALTER COLUMN input DROP NOT NULL;
ALTER TABLE jobs ADD CONSTRAINT jobs_input_or_request
    CHECK (input IS NOT NULL OR (request IS NOT NULL AND request_type IS NOT NULL));
