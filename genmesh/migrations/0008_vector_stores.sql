-- Vector stores (/v1/vector_stores) on pgvector: a store, its files (OpenAI files or documents
-- from a live collection's NATS subject) and their embedded chunks. One key's stores are
-- invisible to every other key. The embedding column is dimension-free (the embedding model is a
-- setting); search scans one store's chunks exactly, by cosine distance.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE vector_stores (
    id               text PRIMARY KEY,
    api_key_id       text NOT NULL,
    name             text NOT NULL DEFAULT '',
    description      text NOT NULL DEFAULT '',
    metadata         jsonb NOT NULL DEFAULT '{}',
    chunking         jsonb NOT NULL,
    embedding_model  text NOT NULL,
    expires_after    jsonb,
    expires_at       timestamptz,
    subject          text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_active_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vector_stores_key_created ON vector_stores (api_key_id, created_at, id);
CREATE INDEX vector_stores_subject ON vector_stores (subject) WHERE subject <> '';

CREATE TABLE vector_store_files (
    vector_store_id  text NOT NULL REFERENCES vector_stores (id) ON DELETE CASCADE,
    file_id          text NOT NULL,
    filename         text NOT NULL DEFAULT '',
    attributes       jsonb NOT NULL DEFAULT '{}',
    chunking         jsonb NOT NULL,
    status           text NOT NULL,
    last_error       jsonb,
    usage_bytes      bigint NOT NULL DEFAULT 0,
    -- While in_progress: until when the router indexing it holds it (a restart leaves it failed).
    lease_until      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (vector_store_id, file_id)
);
CREATE INDEX vector_store_files_created ON vector_store_files (vector_store_id, created_at, file_id);

CREATE TABLE vector_store_chunks (
    vector_store_id  text NOT NULL,
    file_id          text NOT NULL,
    chunk_index      integer NOT NULL,
    content          text NOT NULL,
    embedding        vector NOT NULL,
    PRIMARY KEY (vector_store_id, file_id, chunk_index),
    FOREIGN KEY (vector_store_id, file_id) REFERENCES vector_store_files (vector_store_id, file_id)
        ON DELETE CASCADE
);
