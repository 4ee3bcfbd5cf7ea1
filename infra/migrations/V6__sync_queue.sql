-- crmsync schema, version 6: syncs run from a queue (SQS), one message per integration.

-- The integration's claim on the sync queue: until `sync_claimed_until` a message for it is queued or
-- being worked on (or a "sync now" runs it), and the message carries `sync_queue_token`. One claim at a
-- time (taken by a conditional UPDATE), so overlapping dispatcher runs and concurrent "sync now" calls
-- run it once; a message whose token is no longer the claim's is stale and dropped. The worker clears
-- the claim when it is done; a claim whose holder vanished (a message lost or dead-lettered, a Lambda
-- killed) expires, and the integration may be queued again.
ALTER TABLE crm_integrations ADD COLUMN sync_claimed_until timestamptz;
ALTER TABLE crm_integrations ADD COLUMN sync_queue_token uuid;
ALTER TABLE crm_integrations ADD CONSTRAINT crm_integrations_sync_claim_check
    CHECK ((sync_claimed_until IS NULL) = (sync_queue_token IS NULL));
