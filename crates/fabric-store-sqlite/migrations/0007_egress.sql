-- 0007: egress. A task's egress policy names (a JSON array of names), and on each attempt
-- one JSON object {http_requests, http_bytes_sent, http_bytes_received, http_denied,
-- denials: [{url, reason}]}. Both are NULL when there is nothing to say (no policy named;
-- no request made and none denied), which is the common case: one JSON column rather than
-- five keeps such an attempt row as small as before (a NULL costs a header byte), and the
-- usage and denials are only ever read together with the attempt, never filtered on.
-- Nullable columns without a default change the schema only: no row is rewritten, and
-- rows stored before read as no egress.

ALTER TABLE tasks ADD COLUMN egress TEXT;
ALTER TABLE attempts ADD COLUMN egress TEXT;
