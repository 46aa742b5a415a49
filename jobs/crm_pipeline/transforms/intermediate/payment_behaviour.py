"""Payment behaviour of postpaid billing accounts: bills paid on time and arrears (docs/value.md)."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def account_bills(bills: DataFrame) -> DataFrame:
    """Silver bill lines -> one row per account and bill month.

    Grain: account_id x bill_month. billed_fen = all lines; settled_fen = lines whose paid_date is
    set and on or before the due date (paid at the bill run); outstanding_fen = max(0, billed -
    settled); due_date = the latest due date of the account's lines of that month.
    """
    agg = bills.groupBy("account_id", "bill_month").agg(
        F.sum("amount_fen").cast("long").alias("billed_fen"),
        F.max("due_date").alias("due_date"),
        F.collect_list(F.struct("amount_fen", "paid_date")).alias("_lines"),
    )
    settled = F.aggregate(
        F.col("_lines"), F.lit(0).cast("long"),
        lambda acc, ln: acc + F.when(ln["paid_date"] <= F.col("due_date"), ln["amount_fen"]).otherwise(0),
    )
    return agg.select(
        "account_id", "bill_month", "due_date", "billed_fen", settled.cast("long").alias("settled_fen"),
    ).withColumn("outstanding_fen", F.greatest(F.col("billed_fen") - F.col("settled_fen"), F.lit(0).cast("long")))


def payment_behaviour(accounts: DataFrame, payments: DataFrame, months: DataFrame) -> DataFrame:
    """On-time share and arrears per account at each month's end.

    Inputs: `account_bills` rows; `payments` (account_id, pay_date, amount_fen) of BILL_PAYMENT
    records; `months` (month, month_end). The window of M holds the bills due from the first day
    of M-2 to the last day of M. Payments dated from the first day of the month after the
    window's earliest bill month settle the oldest bill first. Grain: account_id x month, only
    accounts with a bill due in the window.
    """
    window_start = F.add_months(F.col("month"), -2)
    due = accounts.join(months, (F.col("due_date") >= window_start) & (F.col("due_date") <= F.col("month_end")))
    per_account = Window.partitionBy("account_id", "month")
    running = per_account.orderBy("bill_month").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    due = due.select(
        "account_id", "month", "month_end", "bill_month", "due_date", "outstanding_fen",
        F.add_months(F.min("bill_month").over(per_account), 1).alias("pay_from"),
        F.sum("outstanding_fen").over(running).alias("cum_outstanding_fen"),
    )
    p = payments.select("account_id", F.col("pay_date"), F.col("amount_fen").alias("paid_fen"))

    def paid_between(frame: DataFrame, until: str, keys: list[str]) -> DataFrame:
        hit = frame.join(
            p, (frame["account_id"] == p["account_id"]) & (p["pay_date"] >= frame["pay_from"])
            & (p["pay_date"] <= frame[until]), "left",
        )
        return hit.groupBy(*[frame[k] for k in keys]).agg(F.coalesce(F.sum("paid_fen"), F.lit(0)).alias("paid_fen"))

    by_due = paid_between(due, "due_date", ["account_id", "month", "bill_month"])
    bills = due.join(by_due, ["account_id", "month", "bill_month"]).withColumn(
        "on_time", (F.col("outstanding_fen") == 0) | (F.col("paid_fen") >= F.col("cum_outstanding_fen"))
    )
    ends = due.groupBy("account_id", "month", "month_end", "pay_from").agg(
        F.sum("outstanding_fen").alias("outstanding_fen"), F.count(F.lit(1)).alias("bills_due"),
    )
    by_end = paid_between(ends, "month_end", ["account_id", "month"])
    on_time = bills.groupBy("account_id", "month").agg(F.sum(F.col("on_time").cast("int")).alias("bills_on_time"))
    return ends.join(by_end, ["account_id", "month"]).join(on_time, ["account_id", "month"]).select(
        "account_id", "month", F.col("bills_due").cast("int").alias("bills_due"),
        F.col("bills_on_time").cast("int").alias("bills_on_time"),
        (F.col("bills_on_time") / F.col("bills_due")).alias("on_time_share"),
        F.greatest(F.col("outstanding_fen") - F.col("paid_fen"), F.lit(0)).cast("long").alias("arrears_fen"),
    )
