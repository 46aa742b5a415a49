-- view: crm_restricted.watchlist_contact
-- requires: crm.churn_watchlist crm_restricted.contact
-- description: The churn watch list with the contact data a call centre needs (msisdn, name), in call order: for the campaign role only. Server warehouse only (the embedded DuckDB warehouse keeps contacts in a separate file).
SELECT w.month, w.priority_rank, w.subscriber_id, c.msisdn, c.customer_name,
       w.churn_score, w.churn_risk_band, w.clv_fen, w.expected_loss_fen, w.value_segment,
       w.top_reasons, w.recommended_action, w.control_group
FROM crm.churn_watchlist w
JOIN crm_restricted.contact c ON c.subscriber_id = w.subscriber_id
