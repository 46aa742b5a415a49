-- view: crm.segment_migration_share
-- requires: crm.segment_migration
-- description: Where the subscribers of each segment of the month before went this month (the migration matrix as shares): share is subscribers / all subscribers that left the same from_segment, 0-1 per row, summing to 1 per month and from_segment.
SELECT m.month, m.from_segment, m.to_segment, m.subscribers, m.revenue_fen,
       CAST(m.subscribers AS DOUBLE PRECISION)
         / NULLIF(SUM(m.subscribers) OVER (PARTITION BY m.month, m.from_segment), 0) AS share
FROM crm.segment_migration m
