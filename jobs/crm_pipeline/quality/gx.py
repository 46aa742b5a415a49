"""Run a GX 1.x suite against a Spark DataFrame (or an Arrow table already in memory): bronze and
silver suites built from the feed schemas (`quality.suites`), gold suites from
`expectations/<table>.json`.

A frame of at most `local_rows()` rows (`CRM_GX_LOCAL_ROWS`, 50,000 by default; 0: never) is
collected and validated by GX's pandas engine, with the same suite: a validation in Spark costs a
dozen or more Spark queries whatever the rows (1-2 s per suite on 2 cores), which made the checks
of a small feed or mart cost more than building it. Where the engines would disagree the frame
stays in Spark: a double column holding NaN (pandas takes it for null), a pair check meeting a
null (pandas counts the pair unexpected), a type Arrow cannot carry. tests/unit/test_suites.py
holds both engines to the same result for every kind of check the suites use.

The Delta-configured SparkSession must exist before this module starts GX's Spark data
source (GX would otherwise start a session of its own without Delta).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import lru_cache
from pathlib import Path

from pyspark.sql import DataFrame

from crm_pipeline.errors import PipelineError
from crm_pipeline.ops import utcnow
from crm_pipeline.quality.suites import feed_suite, with_table_checks
from crm_pipeline.settings import resource_dir

log = logging.getLogger(__name__)


class DataQualityError(PipelineError):
    """A blocking expectation failed: the run stops before writing the table."""


@dataclass(frozen=True)
class CheckResult:
    check_name: str
    success: bool
    unexpected_count: int
    severity: str


def _class_name(expectation_type: str) -> str:
    return "".join(part.capitalize() for part in expectation_type.split("_"))


@lru_cache(maxsize=None)
def load_suite_definition(table: str) -> dict:
    """The suite of `table`: built from the feed schema for bronze and silver, else read from
    `expectations/<table>.json`."""
    generated = feed_suite(table)
    if generated is not None:
        return generated
    path = resource_dir("expectations") / f"{table}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no expectation suite for {table}: {path}")
    return with_table_checks(table, json.loads(path.read_text(encoding="utf-8")))


def suite_hash(table: str) -> str:
    """A short hash of the suite of `table` as defined now (its expectations, unresolved): a table
    whose content was checked by the same suite need not be checked again while it is unchanged."""
    payload = json.dumps(load_suite_definition(table), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def _context():
    import great_expectations as gx

    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_or_update_spark(name="spark", persist=False)
    return context, source


@lru_cache(maxsize=1)
def _pandas_source():
    context, _ = _context()
    return context.data_sources.add_or_update_pandas(name="pandas")


def local_rows() -> int:
    """Frames of at most this many rows are validated in pandas (`CRM_GX_LOCAL_ROWS`; 0: none)."""
    return int(os.environ.get("CRM_GX_LOCAL_ROWS") or 50_000)


def fits_in_memory(rows: int | None) -> bool:
    """Whether a frame of `rows` rows (None: not known) may be validated in pandas."""
    limit = local_rows()
    return limit > 0 and (rows is None or rows <= limit)


def _in_memory(df: DataFrame, rows: int | None, rows_at_most: int | None = None):
    """`df` as a pandas frame when it holds at most `local_rows()` rows, else None. `rows`: the
    caller's estimate of its rows, when it has one; above the limit, nothing is collected.
    `rows_at_most`: a bound the frame cannot exceed, when the caller has one; within the limit the
    frame is then collected whole, without the limit, which Spark runs as one more stage (a shuffle
    of every partition's first rows into one): about 0.2 s of a small feed's 0.6-0.9 s collect, warm.
    None as well when pandas would read a value differently from Spark: a NaN in a double column
    (pandas takes it for null) or a value it cannot hold."""
    if not (fits_in_memory(rows) and fits_in_memory(rows_at_most)):
        return None
    limit = local_rows()
    try:
        # a type Arrow cannot hold raises a TypeError
        table = (df if rows_at_most is not None else df.limit(limit + 1)).toArrow()
        return _as_pandas(table) if table.num_rows <= limit else None
    except (ValueError, OverflowError, TypeError) as exc:  # pyarrow's errors derive from these
        log.debug("validating in Spark: %s", exc)
        return None


def _as_pandas(table):
    """An Arrow table as the pandas frame GX's pandas engine validates as Spark would, or None when
    the engines would disagree on a value (a NaN in a floating column, which pandas takes for null)."""
    import pyarrow.compute as pc
    import pyarrow.types as pat

    for column in table.columns:
        if pat.is_floating(column.type) and pc.any(pc.is_nan(column)).as_py():
            return None
    # integers with nulls as doubles, which GX's Spark engine compares them as too (past 2**53 alike)
    return table.to_pandas(date_as_object=True)


_RESULTS_STORE = "crm_validation_results"
_results_folder: str | None = None  # set by keep_results
#: (suite, run identifier tuple) of every result this process kept: the pages its Data Docs build renders
_kept: list[tuple[str, tuple]] = []


def keep_results(folder: str | None) -> None:
    """Keep this process's validation results under `folder` (`<folder>/results/`), where every
    task of a run adds its own, so that `build_data_docs` shows the whole run; None: in memory."""
    if folder is None:
        return
    context, _ = _context()
    name = f"{_RESULTS_STORE}:{folder}"
    if name not in context.stores:
        context.add_store(name, {"class_name": "ValidationResultsStore", "store_backend": {
            "class_name": "TupleFilesystemStoreBackend", "base_directory": str(Path(folder) / "results")}})
    context.variables.validation_results_store_name = name
    global _results_folder
    _results_folder = folder


def build_data_docs(run_id: str) -> Path | None:
    """Build the Data Docs of `run_id` (every validation any task of the run kept) into
    `<folder>/runs/<run_id>/index.html`; None when results are not kept."""
    folder = _results_folder
    if folder is None:
        return None
    context, _ = _context()
    site = f"run:{folder}:{run_id}"
    target = Path(folder) / "runs" / run_id
    mine = {k for k in _kept if k[1][0] == run_id}
    if not mine and (target / "index.html").is_file():
        return target / "index.html"  # this process added nothing: the run's pages and index stand
    if site not in context.list_data_docs_sites():
        context.add_data_docs_site(site, {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(target)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "site_section_builders": {"validations": {"run_name_filter": {"equals": run_id}},
                                      "expectations": "0", "profiling": "0"},
        })
    # Only this process's results are rendered (the pages of the run's earlier tasks stand); the
    # index lists every result of the run. Rendering all of them again cost each task about a
    # second per suite validated so far in the run.
    store = context.stores[context.variables.validation_results_store_name]
    keys = [k for k in store.list_keys()
            if (k.expectation_suite_identifier.name, k.run_id.to_tuple()) in mine]
    if keys:
        context.build_data_docs(site_names=[site], resource_identifiers=keys)
    else:  # no page of its own yet (e.g. a run that validated nothing): the whole site, once
        context.build_data_docs(site_names=[site])
    return target / "index.html"


def _resolve(kwargs: dict, params: dict) -> dict:
    """Replace "$name" values with run parameters (e.g. row counts that depend on the months built)."""
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, str) and value.startswith("$"):
            if value[1:] not in params:
                raise KeyError(f"expectation parameter {value} has no value for this run")
            value = params[value[1:]]
        out[key] = value
    return out


#: checks whose engines differ on nulls: GX's pandas engine counts a pair with a null as unexpected,
#: its Spark engine does not (tests/unit/test_suites.py)
_NULLS_DIFFER = frozenset({"expect_column_pair_values_a_to_be_greater_than_b"})


def _same_in_pandas(frame, table: str) -> bool:
    """Whether the pandas engine finds what Spark would in `frame` (pandas) for suite `table`:
    no check whose engines treat nulls differently meets a null."""
    for e in load_suite_definition(table)["expectations"]:
        if e["type"] in _NULLS_DIFFER:
            columns = [v for k, v in e["kwargs"].items() if k in ("column_A", "column_B")]
            if not set(columns) <= set(frame.columns) or frame[columns].isna().to_numpy().any():
                return False  # (a missing column: GX reports it as Spark always has)
    return True


def _build(table: str, params: dict | None = None, local: bool = False):
    """The validation definition of suite `table` on the Spark source, or the pandas one (`local`)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    context, source = _context()
    if local:
        source = _pandas_source()
    definition = load_suite_definition(table)
    expectations = []
    for item in definition["expectations"]:
        cls = getattr(gxe, _class_name(item["type"]))
        expectations.append(cls(**_resolve(item["kwargs"], params or {}), meta=item.get("meta", {})))
    suite = context.suites.add_or_update(gx.ExpectationSuite(name=table, expectations=expectations))
    try:
        asset = source.get_asset(table)
    except LookupError:
        asset = source.add_dataframe_asset(name=table)
    try:
        batch = asset.get_batch_definition("all")
    except (KeyError, LookupError):
        batch = asset.add_batch_definition_whole_dataframe("all")
    return context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{source.name}:{table}", data=batch, suite=suite))


def _check_name(cfg: dict) -> str:
    kwargs = cfg.get("kwargs", {})
    target = kwargs.get("column") or ",".join(kwargs.get("column_list", []) or [])
    return f"{cfg['type']}({target})" if target else cfg["type"]


def _counts_needed(table: str) -> bool:
    """Whether a passing check of the suite can still have unexpected rows (a `mostly` below 1),
    whose count belongs on record: then every run reports counts."""
    return any("mostly" in e["kwargs"] for e in load_suite_definition(table)["expectations"])


def validate(df, table: str, params: dict | None = None, run_id: str | None = None,
             rows: int | None = None, rows_at_most: int | None = None,
             in_spark: DataFrame | None = None) -> list[CheckResult]:
    """Validate `df` (a Spark DataFrame, or an Arrow table already in memory) with the suite named
    `table`; return one result per expectation. The result is kept under `run_id` for the run's
    Data Docs. A small frame is validated in pandas (module docstring); `rows`: the caller's
    estimate of its rows, when it has one, so that a large frame is not collected in part to find
    out; `rows_at_most`: a bound on them, when it has one, so that a small frame is collected whole
    at once. An Arrow table is validated in pandas whatever its rows; when the engines would read
    it differently, `in_spark` (the same rows as a Spark frame) is validated instead, and without
    one ValueError is raised.

    Counts only: no unexpected-value samples, which could carry PII. A suite without `mostly`
    checks runs first with outcomes only (GX then skips a sampling query per check, about a third
    of a small table's validation time); when a check fails, it runs again with the counts, which
    replace the first result in the store, so that every failure is on record with its count.
    """
    from great_expectations.core.run_identifier import RunIdentifier

    spark = isinstance(df, DataFrame)
    local = _in_memory(df, rows, rows_at_most) if spark else _as_pandas(df)
    if local is not None and not _same_in_pandas(local, table):
        local = None
    if local is None and not spark and in_spark is not None:
        df, spark = in_spark, True
    if local is None and not spark:
        raise ValueError(f"{table}: the Arrow table holds values GX's pandas engine reads differently from Spark "
                         "(a NaN in a floating column, or a null in a pair check): validate the Spark frame")
    validation = _build(table, params, local=local is not None)
    data = {"dataframe": df if local is None else local}
    run = RunIdentifier(run_name=run_id, run_time=datetime.now(timezone.utc)) if run_id else None
    summary = {"result_format": "SUMMARY", "partial_unexpected_count": 0}
    if _counts_needed(table):
        result = validation.run(batch_parameters=data, result_format=summary, run_id=run)
    else:
        result = validation.run(batch_parameters=data, result_format={"result_format": "BOOLEAN_ONLY"},
                                run_id=run)
        if not result.success:
            result = validation.run(batch_parameters=data, result_format=summary, run_id=run)
    if run is not None and _results_folder is not None:
        _kept.append((table, run.to_tuple()))
    out = []
    for r in result.results:
        cfg = r.expectation_config.to_json_dict()
        severity = (cfg.get("meta") or {}).get("severity", "blocking")
        unexpected = int((r.result or {}).get("unexpected_count") or 0)
        out.append(CheckResult(_check_name(cfg), bool(r.success), unexpected, severity))
    return out


def dq_rows(results: list[CheckResult], table: str, run_id: str, business_date: date | None) -> list[dict]:
    """crm_ops.data_quality rows of one suite's results."""
    now = utcnow()
    return [
        dict(run_id=run_id, table_name=table, business_date=business_date, check_name=r.check_name,
             success=r.success, unexpected_count=r.unexpected_count, severity=r.severity, validated_at=now)
        for r in results
    ]


def blocking_error(rows: list[dict]) -> DataQualityError | None:
    """The error for the blocking failures among crm_ops.data_quality `rows` (every table's),
    naming each table and check, with all `rows` attached; None when none failed."""
    failed = [r for r in rows if not r["success"]]
    for r in failed:
        log.warning("%s: %s failed (%s unexpected, %s)", r["table_name"], r["check_name"], r["unexpected_count"],
                    r["severity"])
    blocking = [r for r in failed if r["severity"] == "blocking"]
    if not blocking:
        return None
    err = DataQualityError(
        "blocking data-quality checks failed: "
        + "; ".join(f"{r['table_name']}: {r['check_name']} ({r['unexpected_count']} unexpected)" for r in blocking)
    )
    err.rows = rows
    return err


def enforce(df, table: str, run_id: str, business_date: date | None,
            params: dict | None = None, rows: int | None = None, rows_at_most: int | None = None,
            in_spark: DataFrame | None = None) -> list[dict]:
    """Validate, raise DataQualityError on a blocking failure, return crm_ops.data_quality rows."""
    results = dq_rows(validate(df, table, params, run_id, rows, rows_at_most, in_spark), table, run_id,
                      business_date)
    err = blocking_error(results)
    if err is not None:
        raise err
    return results
