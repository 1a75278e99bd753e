-- Thread subscriptions (MSC4306): one row per user and thread they subscribed
-- to or unsubscribed from. A row with subscribed = FALSE remembers
-- unsubscribed_pos, the event stream position when the user unsubscribed: an
-- automatic subscription caused by an event at or before it is refused (MSC4306,
-- "Server-side automatic subscription ordering").
CREATE TABLE thread_subscriptions (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	thread_root_id TEXT NOT NULL,
	subscribed BOOLEAN NOT NULL,
	automatic BOOLEAN NOT NULL,
	unsubscribed_pos BIGINT,
	updated_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, room_id, thread_root_id)
);
