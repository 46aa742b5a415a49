"""Bronze and silver suites are built from the feed schemas: every contract rule becomes a check,
a change of schema changes the suite, each check fails on the record that breaks its rule, in
Spark and in pandas (where small frames are validated) alike, and the cost of a suite in Spark
does not grow with its number of expectations."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from pyspark.sql import types as T

from crm_pipeline.feeds import load_feeds
from crm_pipeline.quality import gx
from crm_pipeline.quality.suites import bronze_suite, feed_suite, silver_suite
from crm_pipeline.transforms.staging.parse import split_raw_lines, type_and_validate
from tests.conftest import stages_run
from tests.unit.test_validate import LINES, _valid_value

D = date(2026, 3, 5)


def _checks(suite: dict) -> set[tuple]:
    return {(e["type"], tuple(sorted((k, str(v)) for k, v in e["kwargs"].items())), e["meta"]["severity"])
            for e in suite["expectations"]}


@pytest.mark.parametrize("feed", list(load_feeds()))
def test_every_contract_rule_of_a_feed_is_a_blocking_silver_check(feed):
    spec = load_feeds()[feed]
    suite = feed_suite(f"silver_{feed}")
    by_column: dict[str, set[str]] = {}
    for e in suite["expectations"]:
        if e["meta"]["severity"] == "blocking" and "column" in e["kwargs"]:
            by_column.setdefault(e["kwargs"]["column"], set()).add(e["type"])
    for f in spec.fields:
        kinds = by_column.get(f.name, set())
        assert ("expect_column_values_to_not_be_null" in kinds) == (not f.nullable), f.name
        assert ("expect_column_values_to_be_in_set" in kinds) == bool(f.allowed), f.name
        assert ("expect_column_values_to_be_between" in kinds) == (f.min is not None or f.max is not None), f.name
        assert ("expect_column_values_to_match_regex" in kinds) == (f.type == "msisdn"), f.name
    keys = [e["kwargs"] for e in suite["expectations"] if "unique" in e["type"]]
    assert len(keys) == 1 and set(spec.key) <= set(keys[0].get("column_list") or [keys[0]["column"]])
    assert feed_suite(f"bronze_{feed}")["name"] == f"bronze_{feed}"


def test_a_schema_change_changes_the_suite_and_no_copy_is_kept():
    spec = load_feeds()["cdr_voice"]
    direction = spec.field("direction")
    changed = replace(spec, fields=tuple(replace(f, allowed=("MO", "MT", "FW")) if f is direction else f
                                         for f in spec.fields))
    sets = {e["kwargs"]["column"]: e["kwargs"]["value_set"] for e in silver_suite(changed)["expectations"]
            if e["type"] == "expect_column_values_to_be_in_set"}
    assert sets["direction"] == ["MO", "MT", "FW"]
    assert _checks(silver_suite(changed)) != _checks(silver_suite(spec))
    renamed = replace(spec, key=("other_party",))
    assert any(e["kwargs"].get("column") == "other_party" for e in bronze_suite(renamed)["expectations"]
               if e["meta"]["severity"] == "warning")
    assert feed_suite("gold_kpi_month") is None and feed_suite("silver_nosuchfeed") is None
    assert gx.load_suite_definition("silver_cdr_voice") == silver_suite(spec)


def _valid_silver_rows(spark, spec):
    """Two valid silver rows of `spec`, typed by the real staging code, as dicts."""
    base = [_valid_value(f) for f in spec.fields]
    if spec.feed == "subscriber":
        base[spec.field_names.index("birth_year")] = "1980"
    lines = spark.createDataFrame([(D, "d1", "f.dat", i, "|".join(base), True) for i in (1, 2)], LINES)
    typed = type_and_validate(split_raw_lines(lines, spec), spec).collect()
    assert all(r.reject_reason is None for r in typed), typed
    rows = []
    for i, r in enumerate(typed):
        row = {f.name: r[f.name] for f in spec.fields}
        for k in spec.key:  # two records, two keys
            row[k] = f"{row[k]}{i}" if isinstance(row[k], str) else row[k]
        row[spec.partition_column] = D
        if spec.msisdn_field:
            row["subscriber_id"] = "S1"
        rows.append(row)
    return rows


def _silver_schema(spec) -> T.StructType:
    """Silver columns, all nullable so that broken rows can be built."""
    schema = T.StructType([T.StructField(f.name, f.spark_type, True) for f in spec.fields])
    if spec.partition_column not in spec.field_names:
        schema = schema.add(spec.partition_column, T.DateType(), True)
    return schema.add("subscriber_id", T.StringType(), True) if spec.msisdn_field else schema


def _violation(expectation: dict, valid: dict, spec) -> dict:
    kw, row = expectation["kwargs"], dict(valid)
    kind = expectation["type"]
    if "unique" in kind:
        return row  # a copy of a valid row repeats its key
    column = kw["column"]
    if kind == "expect_column_values_to_not_be_null":
        row[column] = None
    elif kind == "expect_column_values_to_be_in_set":
        row[column] = "NOT_A_CODE"
    elif kind == "expect_column_values_to_match_regex":
        row[column] = "12345"
    elif kind == "expect_column_values_to_be_between":
        row[column] = kw["max_value"] + 1 if "max_value" in kw else kw["min_value"] - 1
    else:
        raise AssertionError(f"no violation written for {kind}")
    return row


@pytest.fixture(params=["spark", "pandas"])
def engine(request, monkeypatch):
    """Validation in Spark, or in pandas (the path of frames up to `gx.local_rows()` rows)."""
    monkeypatch.setenv("CRM_GX_LOCAL_ROWS", "0" if request.param == "spark" else "100000")
    return request.param


@pytest.mark.spark
@pytest.mark.parametrize("feed", list(load_feeds()))
def test_each_silver_check_fails_on_exactly_the_record_that_breaks_its_rule(spark, feed, engine):
    spec = load_feeds()[feed]
    table = f"silver_{feed}"
    valid = _valid_silver_rows(spark, spec)
    schema = _silver_schema(spec)
    as_tuple = lambda row: tuple(row.get(c) for c in schema.fieldNames())  # noqa: E731

    clean = gx.validate(spark.createDataFrame([as_tuple(r) for r in valid], schema), table)
    assert len(clean) == len(feed_suite(table)["expectations"])
    assert all(r.success for r in clean), [r for r in clean if not r.success]

    # one record per check, each breaking that check's rule only (its own key, except the copy)
    broken = list(valid)
    for i, expectation in enumerate(feed_suite(table)["expectations"]):
        row = _violation(expectation, valid[0], spec)
        if "unique" not in expectation["type"]:
            row.update({k: f"v{i}" for k in spec.key if isinstance(row[k], str)})
        broken.append(row)
    results = gx.validate(spark.createDataFrame([as_tuple(r) for r in broken], schema), table)
    for expectation, r in zip(feed_suite(table)["expectations"], results, strict=True):
        assert r.check_name == gx._check_name(expectation)
        assert not r.success and r.unexpected_count == (2 if "unique" in expectation["type"] else 1), r


@pytest.mark.spark
def test_a_suite_costs_the_same_spark_jobs_whatever_its_number_of_expectations(spark, monkeypatch):
    monkeypatch.setenv("CRM_GX_LOCAL_ROWS", "0")  # in Spark, as a frame above the in-memory limit
    spec = load_feeds()["cdr_voice"]
    valid = _valid_silver_rows(spark, spec)
    schema = _silver_schema(spec)
    df = spark.createDataFrame([tuple(r.get(c) for c in schema.fieldNames()) for r in valid * 50], schema).cache()
    df.count()
    full = silver_suite(spec)
    small = dict(full, expectations=[e for e in full["expectations"] if "unique" in e["type"]][:1]
                 + [e for e in full["expectations"] if e["type"] == "expect_column_values_to_not_be_null"][:2])
    tracker = spark.sparkContext.statusTracker()

    def jobs(suite: dict) -> int:
        monkeypatch.setattr(gx, "load_suite_definition", lambda table: suite)
        group = f"suite-{len(suite['expectations'])}"
        spark.sparkContext.setJobGroup(group, group)
        try:
            gx.validate(df, "silver_cdr_voice")
        finally:
            spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
        return len(tracker.getJobIdsForGroup(group))

    assert len(full["expectations"]) >= 6 * len(small["expectations"])
    assert 0 < jobs(full) <= jobs(small) + 1


@pytest.mark.spark
def test_each_task_renders_only_its_own_data_docs_pages_and_the_index_lists_the_whole_run(spark, tmp_path,
                                                                                           monkeypatch):
    context, _ = gx._context()
    monkeypatch.setattr(gx, "_results_folder", gx._results_folder)  # restored after the test
    monkeypatch.setattr(gx, "_kept", [])
    monkeypatch.setattr(gx, "load_suite_definition", lambda table: {"name": table, "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"}, "meta": {"severity": "warning"}}]})
    previous_store = context.variables.validation_results_store_name
    gx.keep_results(str(tmp_path))
    df = spark.createDataFrame([(1,), (None,)], "x int")
    try:
        gx.validate(df, "docs_first_task", run_id="run-7")  # the first task of run-7
        index = gx.build_data_docs("run-7")
        [first_page] = [p for p in index.parent.rglob("*.html") if "docs_first_task" in str(p)]
        rendered = first_page.stat().st_mtime_ns

        monkeypatch.setattr(gx, "_kept", [])  # a later task: another process of the same run
        assert gx.build_data_docs("run-7") == index  # it validated nothing: nothing is rendered
        assert first_page.stat().st_mtime_ns == rendered
        gx.validate(df, "docs_later_task", run_id="run-7")
        gx.validate(df, "docs_other_run", run_id="run-8")
        assert gx.build_data_docs("run-7") == index
        assert first_page.stat().st_mtime_ns == rendered  # the earlier task's page is not rendered again
        pages = [str(p) for p in index.parent.rglob("*.html")]
        assert any("docs_later_task" in p for p in pages), pages
        html = index.read_text(encoding="utf-8")
        assert "docs_first_task" in html and "docs_later_task" in html and "docs_other_run" not in html
    finally:
        context.variables.validation_results_store_name = previous_store


@pytest.mark.spark
def test_counts_are_on_record_for_a_failed_check_and_for_a_passing_check_below_its_mostly(spark, tmp_path,
                                                                                         monkeypatch):
    """A suite without `mostly` runs with outcomes only while it passes; a failure runs it again
    with counts, and that result is the one kept for the Data Docs."""
    context, _ = gx._context()
    monkeypatch.setattr(gx, "_results_folder", gx._results_folder)
    monkeypatch.setattr(gx, "_kept", [])
    previous_store = context.variables.validation_results_store_name
    between = {"type": "expect_column_values_to_be_between", "kwargs": {"column": "x", "min_value": 0},
               "meta": {"severity": "blocking"}}
    mostly = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x", "mostly": 0.9},
              "meta": {"severity": "warning"}}
    suites = {"strict": {"name": "strict", "expectations": [between]},
              "lenient": {"name": "lenient", "expectations": [mostly, between]}}
    monkeypatch.setattr(gx, "load_suite_definition", lambda table: suites[table])
    gx.keep_results(str(tmp_path))
    one_null = spark.createDataFrame([(None,)] + [(i,) for i in range(19)], "x int")
    three_negative = spark.createDataFrame([(-1,), (-2,), (-3,)] + [(i,) for i in range(10)], "x int")
    try:
        assert [(r.success, r.unexpected_count) for r in gx.validate(one_null, "strict")] == [(True, 0)]
        assert [(r.success, r.unexpected_count) for r in gx.validate(one_null, "lenient")] == [(True, 1), (True, 0)]
        failed = gx.validate(three_negative, "strict", run_id="run-9")
        assert [(r.check_name, r.success, r.unexpected_count) for r in failed] == [
            ("expect_column_values_to_be_between(x)", False, 3)]
        store = context.stores[context.variables.validation_results_store_name]
        [key] = [k for k in store.list_keys() if k.run_id.run_name == "run-9"]
        [kept] = store.get(key).results
        assert kept.result["unexpected_count"] == 3
    finally:
        context.variables.validation_results_store_name = previous_store


def _suite_names() -> list[str]:
    from crm_pipeline.settings import resource_dir

    feeds = [f"{layer}_{feed}" for feed in load_feeds() for layer in ("bronze", "silver")]
    return feeds + sorted(p.stem for p in (resource_dir("expectations")).glob("*.json"))


@pytest.mark.spark
def test_every_kind_of_check_gives_the_same_result_in_pandas_as_in_spark(spark, monkeypatch):
    """Each kind of check any suite uses, on a frame with nulls, duplicates and a violation of
    each: the pandas engine (small frames) finds what Spark finds, count for count."""
    def check(kind: str, **kwargs) -> dict:
        return {"type": f"expect_{kind}", "kwargs": kwargs, "meta": {"severity": "blocking"}}

    checks = [
        check("column_values_to_not_be_null", column="n"),
        check("column_values_to_not_be_null", column="x", mostly=0.5),
        check("column_values_to_be_between", column="n", min_value=0, max_value=2**53),
        check("column_values_to_be_between", column="x", max_value=1.5),
        check("column_values_to_be_in_set", column="code", value_set=["A", "B"]),
        check("column_values_to_match_regex", column="key", regex=r"^[0-9a-f]{4}$"),
        check("column_values_to_be_unique", column="key"),
        check("compound_columns_to_be_unique", column_list=["code", "day"]),
        check("column_pair_values_a_to_be_greater_than_b", column_A="day", column_B="since"),
        check("table_row_count_to_equal", value=6),
        check("table_row_count_to_be_between", min_value=7),
    ]
    used = {e["type"] for name in _suite_names() for e in gx.load_suite_definition(name)["expectations"]}
    assert used <= {c["type"] for c in checks}, "a kind of check no test compares across the engines"
    suite = {"name": "engines", "expectations": checks}
    monkeypatch.setattr(gx, "load_suite_definition", lambda table: suite)
    rows = [  # n: a null, a negative, and 2**53 + 1, which both engines compare as a double (on the bound)
        ("00aa", "A", date(2026, 3, 1), date(2026, 2, 1), 5, 0.5),
        ("00aa", "B", date(2026, 3, 1), date(2026, 3, 2), None, None),
        ("00bb", "C", date(2026, 3, 2), date(2026, 3, 2), -1, 2.5),
        ("00bb", None, date(2026, 3, 4), date(2026, 3, 1), 2**53 + 1, 1.5),
        ("xyz1", "A", date(2026, 3, 1), date(2026, 1, 1), 3, None),
        (None, "A", date(2026, 3, 1), date(2026, 2, 1), 7, 0.0),
    ]
    df = spark.createDataFrame(rows, "key string, code string, day date, since date, n long, x double")

    monkeypatch.setenv("CRM_GX_LOCAL_ROWS", "0")
    in_spark = [(r.check_name, r.success, r.unexpected_count) for r in gx.validate(df, "engines")]
    monkeypatch.setenv("CRM_GX_LOCAL_ROWS", "100")
    assert gx._same_in_pandas(gx._in_memory(df, None), "engines")  # validated in pandas, below
    in_pandas = [(r.check_name, r.success, r.unexpected_count) for r in gx.validate(df, "engines")]
    assert in_pandas == in_spark
    assert sum(not ok for _, ok, _ in in_spark) >= 8, in_spark  # the violations were there to find
    # a pair check meeting a null: GX's engines differ (pandas counts the pair unexpected), so Spark
    with_null = df.unionByName(spark.createDataFrame([("00cc", "B", date(2026, 3, 9), None, 1, 0.0)], df.schema))
    assert not gx._same_in_pandas(gx._in_memory(with_null, None), "engines")
    assert not gx._same_in_pandas(gx._in_memory(df.drop("since"), None), "engines")  # GX's Spark error stands
    pair = [r for r in gx.validate(with_null, "engines") if r.check_name.startswith("expect_column_pair")]
    assert [(r.success, r.unexpected_count) for r in pair] == [(False, 2)]


@pytest.mark.spark
def test_a_frame_pandas_would_read_differently_or_above_the_limit_is_validated_in_spark(spark, monkeypatch):
    monkeypatch.setenv("CRM_GX_LOCAL_ROWS", "3")
    small = spark.createDataFrame([(1.0,), (None,)], "x double")
    assert gx._in_memory(small, None) is not None
    assert gx._in_memory(small, 4) is None  # the caller knows it is larger: nothing collected
    assert gx._in_memory(spark.createDataFrame([(1.0,)] * 4, "x double"), None) is None
    assert gx._in_memory(spark.createDataFrame([(1.0,), (float("nan"),)], "x double"), None) is None
    monkeypatch.setenv("CRM_GX_LOCAL_ROWS", "0")
    assert gx._in_memory(small, None) is None


@pytest.mark.spark
def test_a_frame_known_to_fit_is_collected_whole_without_a_limit(spark, monkeypatch):
    monkeypatch.setenv("CRM_GX_LOCAL_ROWS", "3")
    small = spark.createDataFrame([(1.0,), (None,)], "x double")
    limited = len(stages_run(spark, lambda: gx._in_memory(small, None)))
    whole = len(stages_run(spark, lambda: gx._in_memory(small, None, rows_at_most=2)))
    assert whole == limited - 1  # without the limit's shuffle
    assert len(gx._in_memory(small, None, rows_at_most=2)) == 2
    assert gx._in_memory(small, None, rows_at_most=4) is None  # the bound may exceed the limit: nothing collected
    # a bound the frame does exceed is caught once it is collected
    assert gx._in_memory(spark.createDataFrame([(1.0,)] * 4, "x double"), None, rows_at_most=2) is None


@pytest.mark.spark
def test_an_arrow_table_is_validated_in_pandas_as_its_spark_frame_is_in_spark(spark, monkeypatch):
    """A batch already in memory (a small feed's bronze rows read through delta-rs) is validated
    without Spark, with the results Spark gives for the same rows; one pandas would read
    differently is refused rather than checked wrongly."""
    lenient = {"name": "lenient", "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x", "mostly": 0.5},
         "meta": {"severity": "warning"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "x", "min_value": 0},
         "meta": {"severity": "blocking"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "day"}, "meta": {"severity": "blocking"}}]}
    monkeypatch.setattr(gx, "load_suite_definition", lambda table: lenient)
    df = spark.createDataFrame([(None, date(2026, 3, 1)), (-2, None), (5, date(2026, 3, 2)), (7, date(2026, 3, 2))],
                               "x long, day date")
    monkeypatch.setenv("CRM_GX_LOCAL_ROWS", "0")  # the frame in Spark
    in_spark = gx.validate(df, "lenient")
    assert [(r.success, r.unexpected_count) for r in in_spark] == [(True, 1), (False, 1), (False, 1)]
    table = df.toArrow()
    assert not stages_run(spark, lambda: gx.validate(table, "lenient"))
    assert gx.validate(table, "lenient") == in_spark
    nan = spark.createDataFrame([(float("nan"), date(2026, 3, 1))], "x double, day date")
    with pytest.raises(ValueError, match="validate the Spark frame"):
        gx.validate(nan.toArrow(), "lenient")
    # given the same rows in Spark, those are validated instead: the NaN is a value there, not a null
    assert [(r.success, r.unexpected_count) for r in gx.validate(nan.toArrow(), "lenient", in_spark=nan)] == [
        (True, 0), (True, 0), (True, 0)]
