-- crmsync schema, version 2: where each contact came from, deletions, a phone region per integration, the
-- CRM account an integration is connected to, and integrations that need the user to connect again.

-- An integration whose credentials the CRM refuses is `needs_reauth` until the user connects again.
ALTER TABLE crm_integrations DROP CONSTRAINT crm_integrations_status_check;
ALTER TABLE crm_integrations ADD CONSTRAINT crm_integrations_status_check
    CHECK (status IN ('active', 'paused', 'error', 'needs_reauth'));
-- The region numbers written without a country code are read in (ISO 3166-1 alpha-2); NULL: the CRM's
-- default of the deployment (REX AU, Follow Up Boss and Lofty US unless configured otherwise).
ALTER TABLE crm_integrations ADD COLUMN phone_region text CHECK (phone_region ~ '^[A-Z]{2}$');
-- The CRM's id of the account the credentials belong to, where the CRM tells it.
ALTER TABLE crm_integrations ADD COLUMN account_id text;
-- When a sync last read the whole account (and so saw what is gone).
ALTER TABLE crm_integrations ADD COLUMN last_full_sync_at timestamptz;

-- Set when no CRM record is a live source of the contact any more (deleted, trashed or archived in the
-- CRM, or no longer seen by a complete read); cleared when one is again. crmsync never deletes a contact:
-- the dashboard owns the table.
ALTER TABLE contacts ADD COLUMN crm_deleted_at timestamptz;

-- One row per CRM record a contact was read from: the record's own fields, so that the contact's fields
-- can be taken from its most recently updated live source, and an empty field never overwrites a filled one.
CREATE TABLE contact_sources (
    integration_id    uuid NOT NULL REFERENCES crm_integrations (id) ON DELETE CASCADE,
    external_id       text NOT NULL,
    owner_id          uuid NOT NULL,
    provider          text NOT NULL CHECK (provider IN ('rex', 'followupboss', 'lofty')),
    contact_id        uuid NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    name              text,
    email             text,
    notes             text,
    -- When the CRM last changed the record (NULL: the CRM gives no update time).
    source_updated_at timestamptz,
    -- When crmsync last saw the record change (its fields or its update time); NULL until it has.
    changed_at        timestamptz,
    -- The start of the last complete read that saw the record.
    seen_at           timestamptz,
    deleted_at        timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration_id, external_id)
);
CREATE INDEX contact_sources_contact_idx ON contact_sources (contact_id);

ALTER TABLE contact_sources ENABLE ROW LEVEL SECURITY;
CREATE POLICY contact_sources_owner ON contact_sources
    USING (owner_id = crmsync_current_user()) WITH CHECK (owner_id = crmsync_current_user());
GRANT SELECT, INSERT, UPDATE, DELETE ON contact_sources TO crmsync_app;

-- The contacts synced before this version had one source, named on the row itself.
INSERT INTO contact_sources
    (integration_id, external_id, owner_id, provider, contact_id, name, email, notes, source_updated_at)
SELECT i.id, c.external_id, c.owner_id, c.source_provider, c.id, c.name, c.email, c.notes,
       c.source_updated_at
  FROM contacts c
  JOIN crm_integrations i ON i.user_id = c.owner_id AND i.provider = c.source_provider
 WHERE c.external_id IS NOT NULL
ON CONFLICT DO NOTHING;
