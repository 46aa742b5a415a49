-- view: crm.segment_trend
-- requires: crm.segment_summary
-- description: Each value segment per month beside the month before: size, revenue share, ARPU and average churn score, and how they moved.
SELECT s.month, s.value_segment, s.subscribers, s.revenue_fen, s.revenue_share, s.arpu_fen,
       s.avg_churn_score, s.recommended_strategy,
       p.subscribers AS prev_subscribers,
       s.subscribers - p.subscribers AS subscriber_change,
       p.revenue_share AS prev_revenue_share,
       s.revenue_share - p.revenue_share AS revenue_share_change,
       p.arpu_fen AS prev_arpu_fen
FROM crm.segment_summary s
LEFT JOIN crm.segment_summary p
  ON p.value_segment = s.value_segment
 AND p.month = CAST(s.month - INTERVAL '1 month' AS DATE)
