-- A finished job keeps its result as the worker's typed result message's bytes (result_type names
-- the message, e.g. genmesh.v1.EchoResult), as a queued job keeps its request (0009): nothing is
-- rendered as JSON when the job ends, and a reader renders its own format from it once. `output`
-- (jsonb) stays for jobs that ended before this migration: SQL cannot make their typed bytes, so
-- they are read from it as before, until they expire with the result retention.
ALTER TABLE jobs ADD COLUMN result bytea;
ALTER TABLE jobs ADD COLUMN result_type text;
ALTER TABLE jobs ADD CONSTRAINT jobs_result_has_type CHECK ((result IS NULL) = (result_type IS NULL));
