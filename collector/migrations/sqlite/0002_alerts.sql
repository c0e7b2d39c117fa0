-- Quota alerts sent, one row per quota and window: a soft quota alerts once, whichever
-- replica sees it crossed first.
CREATE TABLE alerts (
    key TEXT PRIMARY KEY,
    sent_ns INTEGER NOT NULL
);
