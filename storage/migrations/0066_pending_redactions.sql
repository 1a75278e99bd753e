-- Redactions that arrived before the event they redact (room engine). From room
-- version 3 a redaction waits for its target ("Handling redactions"): when an
-- event named here is stored, the waiting redactions are checked and applied.
CREATE TABLE pending_redactions (
	target_event_id TEXT NOT NULL,
	redaction_nid BIGINT NOT NULL,
	PRIMARY KEY (target_event_id, redaction_nid)
);
