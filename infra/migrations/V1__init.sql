-- crmsync schema, version 1.
-- Every table carries its owner (a dashboard user id, the JWT `sub`). Row Level Security keeps users apart:
-- the application switches to the role `crmsync_app` and sets `crmsync.user_id` for the transaction, and
-- then sees only that user's rows. The migration owner (table owner) is not subject to the policies; it is
-- used only by system jobs that work across users (the scheduled sync).

DO $$
BEGIN
    CREATE ROLE crmsync_app NOLOGIN;
EXCEPTION
    -- Roles are cluster-wide: another database of the same cluster may have created it, possibly
    -- concurrently (unique_violation).
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

-- SET ROLE crmsync_app must be allowed to whoever runs the application (a no-op for superusers).
DO $$
BEGIN
    EXECUTE format('GRANT crmsync_app TO %I', current_user);
EXCEPTION
    WHEN duplicate_object OR invalid_grant_operation THEN NULL;
END
$$;

CREATE FUNCTION crmsync_current_user() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('crmsync.user_id', true), '')::uuid $$;

-- The dashboard may have its own `contacts` table already (the REX seed's Supabase table: name,
-- phone_number, email, notes, created_at, updated_at). It is adopted, not replaced: crmsync adds its
-- columns and constraints and keeps every row (see the block below). Rows that were there have no owner
-- unless the migration is run with `crmsync.adopt_owner` set to the dashboard user who owns them; a row
-- without an owner is kept but no user of crmsync sees it. Phones already stored need not be E.164, and
-- the dashboard may go on writing rows as before.
CREATE TABLE IF NOT EXISTS contacts (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id          uuid NOT NULL,
    name              text NOT NULL,
    phone_number      text NOT NULL CHECK (phone_number ~ '^\+[1-9][0-9]{6,14}$'),
    email             text,
    notes             text,
    source_provider   text CHECK (source_provider IN ('rex', 'followupboss', 'lofty')),
    external_id       text,
    source_updated_at timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT contacts_owner_phone_key UNIQUE (owner_id, phone_number)
);

DO $$
DECLARE
    id_type text;
    owner   text := nullif(current_setting('crmsync.adopt_owner', true), '');
    dup     text;
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
                WHERE table_schema = current_schema() AND table_name = 'contacts'
                  AND column_name = 'owner_id') THEN
        RETURN; -- crmsync's own table (created just above, or adopted before)
    END IF;
    SELECT data_type INTO id_type FROM information_schema.columns
     WHERE table_schema = current_schema() AND table_name = 'contacts' AND column_name = 'id';
    IF id_type IS NOT NULL AND id_type <> 'uuid' THEN
        RAISE EXCEPTION 'contacts.id is %, crmsync needs a uuid id to refer to contacts', id_type
            USING HINT = 'Rename the column (crmsync then adds its own uuid id) and migrate again.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = current_schema() AND table_name = 'contacts'
                      AND column_name = 'phone_number') THEN
        RAISE EXCEPTION 'contacts has no phone_number column, so crmsync cannot adopt it'
            USING HINT = 'Rename the table, or its phone column to phone_number, and migrate again.';
    END IF;
    IF owner IS NOT NULL THEN
        SELECT phone_number INTO dup FROM contacts
         WHERE phone_number IS NOT NULL GROUP BY phone_number HAVING count(*) > 1 LIMIT 1;
        IF dup IS NOT NULL THEN
            RAISE EXCEPTION 'contacts has more than one row with the phone number %, and crmsync keeps one row per phone and user', dup
                USING HINT = 'Merge the duplicate rows, or migrate without ADOPT_CONTACTS_OWNER.';
        END IF;
    END IF;
    IF id_type IS NULL THEN
        ALTER TABLE contacts ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid();
        IF EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conrelid = 'contacts'::regclass AND contype = 'p') THEN
            ALTER TABLE contacts ADD CONSTRAINT contacts_id_key UNIQUE (id);
        ELSE
            ALTER TABLE contacts ADD PRIMARY KEY (id);
        END IF;
    END IF;
    ALTER TABLE contacts ADD COLUMN IF NOT EXISTS name text;
    ALTER TABLE contacts ADD COLUMN IF NOT EXISTS email text;
    ALTER TABLE contacts ADD COLUMN IF NOT EXISTS notes text;
    ALTER TABLE contacts ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
    ALTER TABLE contacts ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
    ALTER TABLE contacts ADD COLUMN owner_id uuid;
    ALTER TABLE contacts ADD COLUMN source_provider text
        CHECK (source_provider IN ('rex', 'followupboss', 'lofty'));
    ALTER TABLE contacts ADD COLUMN external_id text;
    ALTER TABLE contacts ADD COLUMN source_updated_at timestamptz;
    IF owner IS NOT NULL THEN
        UPDATE contacts SET owner_id = owner::uuid;
    END IF;
    -- The dashboard's own writes stay as they were (no owner, phones as typed): crmsync writes only E.164
    -- phones with an owner, and checks that in its code. One row per user and phone.
    ALTER TABLE contacts ADD CONSTRAINT contacts_owner_phone_key UNIQUE (owner_id, phone_number);
END
$$;

CREATE TABLE crm_integrations (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                 uuid NOT NULL,
    provider                text NOT NULL CHECK (provider IN ('rex', 'followupboss', 'lofty')),
    auth_type               text NOT NULL CHECK (auth_type IN ('oauth', 'api_key')),
    -- AES-256-GCM: ciphertext with its tag, the 96-bit nonce, and the id of the key that sealed it.
    credentials_ciphertext  bytea NOT NULL,
    credentials_nonce       bytea NOT NULL CHECK (octet_length(credentials_nonce) = 12),
    credentials_key_version text NOT NULL,
    status                  text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'error')),
    auto_sync               boolean NOT NULL DEFAULT true,
    risk_threshold          integer NOT NULL DEFAULT 20 CHECK (risk_threshold BETWEEN 0 AND 100),
    consecutive_failures    integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    sync_cursor             jsonb,
    sync_started_at         timestamptz,
    token_expires_at        timestamptz,
    last_sync_at            timestamptz,
    last_error              text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT crm_integrations_user_provider_key UNIQUE (user_id, provider)
);

-- Logs outlive their integration (a disconnect keeps them), so integration_id is not a foreign key.
CREATE TABLE crm_sync_logs (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    integration_id uuid,
    user_id        uuid NOT NULL,
    provider       text NOT NULL CHECK (provider IN ('rex', 'followupboss', 'lofty')),
    direction      text NOT NULL CHECK (direction IN ('pull', 'push')),
    trigger        text NOT NULL CHECK (trigger IN ('manual', 'webhook', 'schedule')),
    status         text NOT NULL CHECK (status IN ('success', 'failed', 'skipped', 'partial')),
    lead_id        text,
    action         text,
    attempts       integer NOT NULL DEFAULT 1,
    metrics        jsonb,
    error          text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crm_sync_logs_user_created_idx ON crm_sync_logs (user_id, created_at DESC, id DESC);
CREATE INDEX crm_sync_logs_integration_created_idx ON crm_sync_logs (integration_id, created_at DESC, id DESC);

-- The push outbox: a lead event is written here before anything is sent, once per lead version.
CREATE TABLE lead_events (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL,
    lead_id     text NOT NULL,
    version_key text NOT NULL,
    event       text NOT NULL CHECK (event IN ('lead.created', 'lead.updated')),
    payload     jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT lead_events_version_key UNIQUE (user_id, lead_id, version_key)
);

-- One delivery per lead event and integration, with its own retry state.
CREATE TABLE push_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id        uuid NOT NULL REFERENCES lead_events (id) ON DELETE CASCADE,
    integration_id  uuid NOT NULL REFERENCES crm_integrations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'skipped', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    external_id     text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT push_deliveries_event_integration_key UNIQUE (event_id, integration_id)
);
CREATE INDEX push_deliveries_due_idx ON push_deliveries (next_attempt_at) WHERE status = 'pending';

-- Row Level Security: a user sees and writes only their own rows.
ALTER TABLE contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm_integrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm_sync_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE lead_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE push_deliveries ENABLE ROW LEVEL SECURITY;

CREATE POLICY contacts_owner ON contacts
    USING (owner_id = crmsync_current_user()) WITH CHECK (owner_id = crmsync_current_user());
CREATE POLICY crm_integrations_owner ON crm_integrations
    USING (user_id = crmsync_current_user()) WITH CHECK (user_id = crmsync_current_user());
CREATE POLICY crm_sync_logs_owner ON crm_sync_logs
    USING (user_id = crmsync_current_user()) WITH CHECK (user_id = crmsync_current_user());
CREATE POLICY lead_events_owner ON lead_events
    USING (user_id = crmsync_current_user()) WITH CHECK (user_id = crmsync_current_user());
CREATE POLICY push_deliveries_owner ON push_deliveries
    USING (user_id = crmsync_current_user()) WITH CHECK (user_id = crmsync_current_user());

GRANT SELECT, INSERT, UPDATE, DELETE ON contacts, crm_integrations, crm_sync_logs, lead_events, push_deliveries
    TO crmsync_app;
GRANT EXECUTE ON FUNCTION crmsync_current_user() TO crmsync_app;
