-- crmsync schema, version 7: a sync asked for while the integration's claim is held is not dropped.

-- Set when a CRM webhook or "sync now" asks for a sync while a claim holds the integration (its message
-- is queued or being worked on): that run may have read the account before the change the request is
-- about. The claim's holder, when it is done, clears this and syncs again instead of letting go (one
-- conditional UPDATE each way, so a request either marks a held claim or takes a free one). A mark
-- left by a holder that vanished makes the integration due for the next dispatcher run.
ALTER TABLE crm_integrations ADD COLUMN sync_requested_at timestamptz;
