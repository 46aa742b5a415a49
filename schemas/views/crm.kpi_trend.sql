-- view: crm.kpi_trend
-- requires: crm.kpi_month
-- description: ARPU, churn and usage per dimension value and month beside the month before: the trend lines of a BI dashboard. arpu_change is relative (0.05 = 5 % up); churn_rate_change in points of rate (0.01 = one percentage point).
SELECT k.month, k.dimension, k.dimension_value,
       k.active_subscribers, k.revenue_fen, k.arpu_fen, k.churn_rate,
       k.voice_mou_per_sub, k.data_mb_per_sub,
       p.active_subscribers AS prev_active_subscribers,
       p.arpu_fen AS prev_arpu_fen,
       k.arpu_fen / NULLIF(p.arpu_fen, 0) - 1 AS arpu_change,
       p.churn_rate AS prev_churn_rate,
       k.churn_rate - p.churn_rate AS churn_rate_change
FROM crm.kpi_month k
LEFT JOIN crm.kpi_month p
  ON p.dimension = k.dimension AND p.dimension_value = k.dimension_value
 AND p.month = CAST(k.month - INTERVAL '1 month' AS DATE)
