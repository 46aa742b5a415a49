"""Marts named by business entity: subscriber_month, kpi_month, value segments ..."""
