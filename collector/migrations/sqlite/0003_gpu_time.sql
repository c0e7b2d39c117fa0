-- GPU time a pod held in an interval (the agent's tokenmeter.gpu_usage records), in µs.
-- Calls have 0; GPU rows have operation 'gpu' and no tokens.
ALTER TABLE usage ADD COLUMN gpu_time INTEGER NOT NULL DEFAULT 0;
