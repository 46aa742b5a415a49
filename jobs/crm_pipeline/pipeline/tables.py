"""Read silver tables by feed, with an empty frame of the right schema before a feed's first load."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from crm_pipeline.feeds import feed_spec
from crm_pipeline.io import delta
from crm_pipeline.settings import LakeLayout
from crm_pipeline.transforms.staging.parse import LINEAGE
from crm_pipeline.transforms.staging.silver import partition_date

_LINEAGE_TYPES = {"business_date": T.DateType(), "delivery_id": T.StringType(),
                  "source_file": T.StringType(), "line_no": T.LongType()}


def silver_schema(feed: str) -> T.StructType:
    spec = feed_spec(feed)
    part, _ = partition_date(spec)
    fields = [T.StructField(part, T.DateType())] + list(spec.typed_schema().fields)
    if spec.msisdn_field:
        fields.append(T.StructField("subscriber_id", T.StringType()))
    fields += [T.StructField(c, _LINEAGE_TYPES[c]) for c in LINEAGE]
    return T.StructType(fields)


def silver(spark: SparkSession, lake: LakeLayout, feed: str) -> DataFrame:
    df = delta.read(spark, lake.silver(feed))
    return df if df is not None else spark.createDataFrame([], silver_schema(feed))
