-- Custom apps: the current deployment of each app, and every version ever deployed.
CREATE TABLE apps (
    id               text PRIMARY KEY,                   -- owner/alias
    owner_key_id     text NOT NULL,                      -- the deploying key: may redeploy, scale, delete
    version          integer NOT NULL,
    entrypoint       text NOT NULL,                      -- file.py::ClassName inside the bundle
    code_key         text NOT NULL,                      -- blob-store key of the code bundle (zip)
    machine_type     text NOT NULL,
    num_gpus         integer NOT NULL DEFAULT 0,
    requirements     jsonb NOT NULL DEFAULT '[]'::jsonb,
    keep_alive_s     double precision NOT NULL,
    min_concurrency  integer NOT NULL,
    max_concurrency  integer NOT NULL,
    endpoints        jsonb NOT NULL,                     -- [{path, input_schema, output_schema, streaming}]
    description      text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (version > 0),
    CHECK (min_concurrency >= 0 AND max_concurrency >= 1 AND min_concurrency <= max_concurrency)
);
CREATE INDEX apps_owner ON apps (owner_key_id);

-- Versions only grow, also across a delete and a new deploy under the same name, so a runner
-- of an old deployment is never mistaken for one of the new.
CREATE TABLE app_versions (
    app_id        text NOT NULL,
    version       integer NOT NULL,
    owner_key_id  text NOT NULL,
    entrypoint    text NOT NULL,
    code_key      text NOT NULL,
    code_sha256   text NOT NULL,
    code_bytes    bigint NOT NULL,
    manifest      jsonb NOT NULL,                        -- hardware, scaling and endpoints as deployed
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, version)
);
