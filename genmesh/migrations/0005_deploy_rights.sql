-- Deploy rights. An app's owner namespace (the `owner/` of `owner/alias`) belongs to the key that
-- first deployed under it; ordinary keys deploy only under namespaces bound to them (see
-- services/router/apps.py for the rule). Admin deploys bind a free namespace too, so no key can
-- later move in beside an admin's apps.
CREATE TABLE app_owners (
    owner       text PRIMARY KEY,
    key_id      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX app_owners_key ON app_owners (key_id);

-- Apps deployed before this migration: each namespace goes to the key of its oldest app.
INSERT INTO app_owners (owner, key_id, created_at)
SELECT DISTINCT ON (split_part(id, '/', 1)) split_part(id, '/', 1), owner_key_id, created_at
FROM apps ORDER BY split_part(id, '/', 1), created_at
ON CONFLICT DO NOTHING;

-- Whether the current version came from an admin key: only such code may run unsandboxed on a
-- worker that has no sandbox.
ALTER TABLE apps ADD COLUMN trusted boolean NOT NULL DEFAULT false;
UPDATE apps SET trusted = true
WHERE owner_key_id IN (SELECT id FROM api_keys WHERE scope = 'admin');
