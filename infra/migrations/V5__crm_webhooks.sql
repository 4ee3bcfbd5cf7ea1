-- crmsync schema, version 5: CRMs that call crmsync when their contacts change (webhooks in).

-- An integration whose CRM calls us: the SHA-256 of the secret token in its callback address (the token
-- itself is never stored), what was subscribed at the CRM (its ids, for the disconnect), and since when.
-- NULL `live_since`: the integration is only polled.
ALTER TABLE crm_integrations ADD COLUMN webhook_token_hash bytea
    CHECK (octet_length(webhook_token_hash) = 32);
ALTER TABLE crm_integrations ADD CONSTRAINT crm_integrations_webhook_token_key UNIQUE (webhook_token_hash);
ALTER TABLE crm_integrations ADD COLUMN webhook_subscription jsonb;
ALTER TABLE crm_integrations ADD COLUMN live_since timestamptz;

-- Deliveries already taken, by the CRM's id of the delivery or event (Follow Up Boss `eventId`, REX event
-- `id`): a replayed or repeated delivery changes nothing. Kept a week (the CRMs retry for hours).
CREATE TABLE crm_webhook_receipts (
    integration_id uuid NOT NULL REFERENCES crm_integrations (id) ON DELETE CASCADE,
    owner_id       uuid NOT NULL,
    receipt_key    text NOT NULL CHECK (length(receipt_key) BETWEEN 1 AND 200),
    received_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration_id, receipt_key)
);
CREATE INDEX crm_webhook_receipts_received_idx ON crm_webhook_receipts (received_at);

ALTER TABLE crm_webhook_receipts ENABLE ROW LEVEL SECURITY;
CREATE POLICY crm_webhook_receipts_owner ON crm_webhook_receipts
    USING (owner_id = crmsync_current_user()) WITH CHECK (owner_id = crmsync_current_user());
GRANT SELECT, INSERT, DELETE ON crm_webhook_receipts TO crmsync_app;
