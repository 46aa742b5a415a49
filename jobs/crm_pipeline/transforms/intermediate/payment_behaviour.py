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
    # Summed per paid day first (a bill's lines are mostly paid together), then the month's latest
    # due date over those few rows: hash aggregations and a window, where a list of every line per
    # account and month (`collect_list`) made an object aggregation that sorted all the lines
    # (4.5 -> 2.4 s for the 3.2 M lines of six months at 100 k subscribers, warm).
    per_day = bills.groupBy("account_id", "bill_month", "paid_date").agg(
        F.sum("amount_fen").alias("amount_fen"), F.max("due_date").alias("due_date"))
    due = F.max("due_date").over(Window.partitionBy("account_id", "bill_month"))
    agg = per_day.withColumn("_due", due).groupBy("account_id", "bill_month").agg(
        F.sum("amount_fen").cast("long").alias("billed_fen"),
        F.max("due_date").alias("due_date"),
        F.sum(F.when(F.col("paid_date") <= F.col("_due"), F.col("amount_fen")).otherwise(0)).cast("long")
        .alias("settled_fen"),
    )
    return agg.select("account_id", "bill_month", "due_date", "billed_fen", "settled_fen").withColumn(
        "outstanding_fen", F.greatest(F.col("billed_fen") - F.col("settled_fen"), F.lit(0).cast("long")))


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
    earliest = F.min("bill_month").over(per_account)
    due = due.select(
        "account_id", "month", "month_end", "bill_month", "due_date", "outstanding_fen",
        F.add_months(earliest, 1).alias("pay_from"),
        F.sum("outstanding_fen").over(running).alias("cum_outstanding_fen"),
        (F.col("bill_month") == earliest).alias("_earliest"),
    )
    # One join: every bill of the window meets the payments from `pay_from` to the month's end. A
    # bill's are those by its due date; the month's, those its earliest bill met (every bill of the
    # window meets the same ones). The join is hashed by account, so the two aggregations after it
    # need no shuffle of their own.
    p = payments.select(F.col("account_id").alias("_payer"), "pay_date", F.col("amount_fen").alias("paid_fen"))
    hit = due.join(p, (F.col("account_id") == F.col("_payer"))
                   & F.col("pay_date").between(F.col("pay_from"), F.col("month_end")), "left")
    keys = ("account_id", "month", "bill_month", "outstanding_fen", "cum_outstanding_fen", "_earliest")
    bills = hit.groupBy(*keys).agg(
        F.coalesce(F.sum(F.when(F.col("pay_date") <= F.col("due_date"), F.col("paid_fen"))), F.lit(0))
        .alias("paid_by_due"),
        F.coalesce(F.sum("paid_fen"), F.lit(0)).alias("paid_by_end"),
    )
    on_time = (F.col("outstanding_fen") == 0) | (F.col("paid_by_due") >= F.col("cum_outstanding_fen"))
    ends = bills.groupBy("account_id", "month").agg(
        F.count(F.lit(1)).alias("bills_due"),
        F.sum(on_time.cast("int")).alias("bills_on_time"),
        F.sum("outstanding_fen").alias("outstanding_fen"),
        F.max(F.when(F.col("_earliest"), F.col("paid_by_end"))).alias("paid_fen"),
    )
    return ends.select(
        "account_id", "month", F.col("bills_due").cast("int").alias("bills_due"),
        F.col("bills_on_time").cast("int").alias("bills_on_time"),
        (F.col("bills_on_time") / F.col("bills_due")).alias("on_time_share"),
        F.greatest(F.col("outstanding_fen") - F.col("paid_fen"), F.lit(0)).cast("long").alias("arrears_fen"),
    )
