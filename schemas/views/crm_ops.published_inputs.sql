-- view: crm_ops.published_inputs
-- requires: crm_ops.publications crm_ops.month_inputs crm_ops.pipeline_runs
-- description: Lineage of what the warehouse holds: per published table and month (its latest publish), the gold Delta version published, the build run it came from and every delivery and file that build read, with the file's records loaded and quarantined. Trailing windows (3-month ARPU, churn features) also read earlier months' gold: their inputs are under those months. Which files fed the March 2026 churn scores: WHERE table_name = 'churn_watchlist' AND month = DATE '2026-03-01'.
WITH latest AS (
  SELECT table_name, month, max(published_at) AS published_at
  FROM crm_ops.publications GROUP BY table_name, month
), published AS (
  SELECT p.table_name, p.month, p.run_id, p.gold_version, p.published_at, max(i.built_at) AS built_at
  FROM crm_ops.publications p
  JOIN latest l ON l.table_name = p.table_name AND l.month = p.month AND l.published_at = p.published_at
  JOIN crm_ops.month_inputs i ON i.month = p.month AND i.built_at <= p.published_at
  GROUP BY p.table_name, p.month, p.run_id, p.gold_version, p.published_at
)
SELECT p.table_name, p.month, p.run_id AS publish_run_id, p.published_at, p.gold_version,
       i.run_id AS build_run_id, i.built_at, i.feed, i.business_date, i.delivery_id,
       f.source_file, f.rows_loaded, f.rows_quarantined, f.rows_duplicate
FROM published p
JOIN crm_ops.month_inputs i ON i.month = p.month AND i.built_at = p.built_at
LEFT JOIN crm_ops.pipeline_runs f
  ON f.delivery_id = i.delivery_id AND f.source_file IS NOT NULL AND f.status = 'SUCCESS'
