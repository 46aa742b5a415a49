"""Alerts: one hook every failure and late delivery goes through.

`send(subject, lines)` always logs (logger `crm_pipeline.alerts`, WARNING). When configured it
also sends, never raising (an alert that cannot be sent is logged, and the caller's own failure
stands):

- `CRM_ALERT_WEBHOOK`: an http(s) URL that receives a JSON POST
  `{"source": "crm-pipeline", "subject": ..., "text": ..., "lines": [...]}` (the shape Slack,
  Mattermost and Teams incoming webhooks accept as `text`);
- `CRM_ALERT_EMAIL`: comma-separated recipients, sent through the SMTP server `CRM_SMTP_HOST`
  (`CRM_SMTP_PORT`, default 25; `CRM_SMTP_USER` / `CRM_SMTP_PASSWORD` when it needs a login;
  `CRM_ALERT_FROM`, default crm-pipeline@<host>).

Airflow tasks call it from their failure callback (dags/); `crm status --alert` calls it for late
and failed deliveries. No message carries a subscriber's number: callers pass what crm_ops holds.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.request

log = logging.getLogger(__name__)

TIMEOUT_S = 10


def send(subject: str, lines: list[str]) -> list[str]:
    """Log the alert and send it to every configured channel; returns the channels it reached
    (`log` always first)."""
    log.warning("%s%s", subject, "".join(f"\n  {line}" for line in lines))
    reached = ["log"]
    webhook = os.environ.get("CRM_ALERT_WEBHOOK")
    if webhook:
        try:
            _post(webhook, subject, lines)
            reached.append("webhook")
        except Exception as exc:  # noqa: BLE001 - alerting must not hide the failure it reports
            log.error("alert not sent to the webhook %s: %s", _without_secret(webhook), exc)
    recipients = [r.strip() for r in os.environ.get("CRM_ALERT_EMAIL", "").split(",") if r.strip()]
    if recipients:
        try:
            _mail(recipients, subject, lines)
            reached.append("email")
        except Exception as exc:  # noqa: BLE001
            log.error("alert not e-mailed to %s: %s", ", ".join(recipients), exc)
    return reached


def _without_secret(url: str) -> str:
    """A webhook URL for logs: scheme and host only (its path is often the secret)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/..."


def _post(url: str, subject: str, lines: list[str]) -> None:
    body = json.dumps({"source": "crm-pipeline", "subject": subject, "text": "\n".join([subject, *lines]),
                       "lines": lines}).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        if response.status >= 300:
            raise OSError(f"HTTP {response.status}")


def _mail(recipients: list[str], subject: str, lines: list[str]) -> None:
    import smtplib
    from email.message import EmailMessage

    host = os.environ.get("CRM_SMTP_HOST")
    if not host:
        raise OSError("CRM_ALERT_EMAIL is set but CRM_SMTP_HOST is not")
    message = EmailMessage()
    message["Subject"] = f"[crm-pipeline] {subject}"
    message["From"] = os.environ.get("CRM_ALERT_FROM", f"crm-pipeline@{socket.getfqdn()}")
    message["To"] = ", ".join(recipients)
    message.set_content("\n".join(lines) + "\n")
    with smtplib.SMTP(host, int(os.environ.get("CRM_SMTP_PORT", "25")), timeout=TIMEOUT_S) as smtp:
        if os.environ.get("CRM_SMTP_USER"):
            smtp.starttls()
            smtp.login(os.environ["CRM_SMTP_USER"], os.environ.get("CRM_SMTP_PASSWORD", ""))
        smtp.send_message(message)


def task_failed(context) -> None:
    """Airflow `on_failure_callback`: one alert naming the DAG, task, run, try and log URL."""
    ti = context.get("task_instance") or context.get("ti")
    exception = context.get("exception")
    subject = f"{ti.dag_id}.{ti.task_id} failed" if ti else "an Airflow task failed"
    lines = [f"run: {context.get('run_id')}", f"try: {getattr(ti, 'try_number', '?')}"]
    if exception is not None:
        lines.append(f"error: {str(exception).strip().splitlines()[0][:500] if str(exception).strip() else type(exception).__name__}")
    if ti is not None and getattr(ti, "log_url", None):
        lines.append(f"log: {ti.log_url}")
    send(subject, lines)
