-- The audit read model stops copying each event's payload and metadata into jsonb: the event
-- store holds them already (`events.canonical`, joined by position when a page is read).
-- Parsing two jsonb values per event was a third of a full replay's time (10 of 31 s over
-- 1,000,000 events) and doubled the storage of every event.
ALTER TABLE rm_audit_events DROP COLUMN payload, DROP COLUMN metadata;
