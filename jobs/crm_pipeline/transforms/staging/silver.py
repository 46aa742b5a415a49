"""Silver staging: partition date, number -> subscription mapping, latest-delivery-wins dedup."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from crm_pipeline.columns import mask_value
from crm_pipeline.feeds import FeedSpec


def partition_date(spec: FeedSpec) -> tuple[str, Column]:
    """Silver partition column of a feed and how to derive it from typed columns.

    Snapshots: the snapshot (business) date. Events: the local date of the record's own event
    time, so late records land on their own day. Bills: the billed month.
    """
    if spec.kind == "snapshot":
        return spec.partition_column, F.col("business_date")
    if spec.kind == "monthly":
        return spec.partition_column, F.col("bill_month")
    return spec.partition_column, F.to_date(F.col(spec.event_time))


def with_partition_date(records: DataFrame, spec: FeedSpec) -> DataFrame:
    name, expr = partition_date(spec)
    return records.withColumn(name, expr)


def holders_by_day(snapshot: DataFrame) -> DataFrame:
    """Which subscription holds each number on each snapshot day.

    Grain: snapshot_date x msisdn. A number belongs to the active (ACTIVE or SUSPENDED)
    subscription holding it that day, else to one terminated that very day (its last records
    arrive on the termination day). Input: silver subscriber rows.
    """
    eligible = snapshot.where(
        F.col("status").isin("ACTIVE", "SUSPENDED")
        | ((F.col("status") == "TERMINATED") & (F.col("status_date") == F.col("snapshot_date")))
    )
    rank = Window.partitionBy("snapshot_date", "msisdn").orderBy(
        (F.col("status") == "TERMINATED").asc(), F.col("activation_date").desc(), F.col("subscriber_id").desc()
    )
    return (
        eligible.select("snapshot_date", "msisdn", "subscriber_id", "status", "status_date", "activation_date")
        .withColumn("_rank", F.row_number().over(rank))
        .where("_rank = 1")
        .select("snapshot_date", "msisdn", "subscriber_id")
    )


def holder_key(number: Column, day: Column) -> Column:
    """An 11-digit number on a day as one long: the number x 100,000 + the day's count since
    1970-01-01 (NULL for a string of another length). Two such keys are equal exactly when the
    numbers and the days are, for numbers of 11 digits, the only ones silver typing accepts (it
    rejects the others as `bad_msisdn`, so their records are never mapped). Spark joins on one
    long key through a map of longs: at a million subscribers, 3.0 -> 2.2 s to map a day's 5 M
    voice records against the (day, number) pair of strings."""
    return F.when(F.length(number) == 11, number.try_cast("long") * 100_000 + F.unix_date(day))


def map_to_subscribers(records: DataFrame, holders: DataFrame, spec: FeedSpec) -> DataFrame:
    """Attach `subscriber_id`: the holder of the record's number on the record's event date
    (`holders`: `holders_by_day` rows).

    Valid records whose number no subscription holds that day get reason `unknown_subscriber`.
    """
    msisdn = spec.msisdn_field
    h = holders.select(holder_key(F.col("msisdn"), F.col("snapshot_date")).alias("_h_key"), "subscriber_id")
    joined = (records.withColumn("_h_key", holder_key(F.col(msisdn), F.col("event_date")))
              .join(h, "_h_key", "left").drop("_h_key"))
    unknown = F.col("reject_reason").isNull() & F.col("subscriber_id").isNull()
    return joined.withColumn(
        "reject_detail",
        F.when(unknown, F.concat(F.lit(f"{msisdn}="), mask_value(F.col(msisdn)),
                                 F.lit(" held by no subscription on "), F.col("event_date").cast("string")))
        .otherwise(F.col("reject_detail")),
    ).withColumn("reject_reason", F.when(unknown, F.lit("unknown_subscriber")).otherwise(F.col("reject_reason")))


def latest_version_wins(records: DataFrame, spec: FeedSpec) -> DataFrame:
    """Mark the one version of each record that silver keeps: `is_winner`.

    Only valid records (reject_reason NULL) compete. The version from the latest delivery wins
    (later business date; within one delivery the last line). Snapshots deduplicate within their
    day. A bill month comes entirely from its latest delivery: lines of earlier deliveries of the
    same month are superseded even when the correction dropped them. Records numbered by a
    `parse.FileIndex` are ordered by their `_file`, which orders them as their `source_file` would.
    """
    valid = F.col("reject_reason").isNull()
    key = list(spec.key)
    if spec.kind == "snapshot":
        key = ["business_date", *key]
    # by key alone, valid versions first: the batch then stays hashed and sorted by its key, which
    # the comparison with silver's stored versions (a join on the key) and the silver suite's
    # uniqueness check (a window over the key) use as they are instead of shuffling it again
    file = F.col("_file") if "_file" in records.columns else F.col("source_file")
    order = [valid.desc(), F.col("business_date").desc(), file.desc(), F.col("line_no").desc()]
    ranked = records.withColumn(
        "_rank",
        F.when(valid, F.row_number().over(Window.partitionBy(*key).orderBy(*order))),
    )
    winner = F.col("_rank") == 1
    if spec.kind == "monthly":
        latest = F.max(F.when(valid, F.col("business_date"))).over(Window.partitionBy("bill_month"))
        winner = winner & (F.col("business_date") == latest)
    return ranked.withColumn("is_winner", F.coalesce(winner, F.lit(False))).drop("_rank")


def outcome() -> Column:
    """Each delivered record ends as exactly one of: quarantined, duplicate, loaded."""
    return (
        F.when(F.col("reject_reason").isNotNull(), F.lit("quarantined"))
        .when(F.col("is_winner"), F.lit("loaded"))
        .otherwise(F.lit("duplicate"))
    )
