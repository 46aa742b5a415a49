"""Exit codes and failure records that need no Spark: usage errors exit 2 before any work, a failed
publish exits 1 with a FAILED row in the lake's crm_ops, failure messages mask numbers."""

from __future__ import annotations

import pytest
from deltalake import DeltaTable

from crm_pipeline import cli, ops
from crm_pipeline.errors import EXIT_FAILED, EXIT_USAGE, PipelineError
from crm_pipeline.settings import LakeLayout


@pytest.mark.parametrize("argv, says", [
    (["ingest", "--landing", "{tmp}/missing", "--lake", "{tmp}/lake"], "is not a directory"),
    (["run", "--landing", "{tmp}/missing", "--lake", "{tmp}/lake", "--demo-key"], "is not a directory"),
    (["ingest", "--landing", "{tmp}", "--lake", "{tmp}/lake", "--feeds", "cdr_voice,cdr_video"], "cdr_video"),
    (["run", "--landing", "{tmp}", "--lake", "{tmp}/lake", "--warehouse", "mysql://h/db", "--demo-key"],
     "unsupported warehouse URL"),
    (["publish", "--lake", "{tmp}/lake", "--warehouse", "duckdb://host/w.duckdb"], "has no host"),
    (["rollup", "--lake", "{tmp}/lake"], "CRM_MSISDN_HMAC_KEY is not set"),
    (["maintain", "--lake", "{tmp}/lake", "--retain-days", "3"], "at least 7 days of history"),
])
def test_usage_errors_exit_2_with_a_message_and_record_nothing(argv, says, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CRM_MSISDN_HMAC_KEY", raising=False)
    code = cli.main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"crm {argv[0]}: ") and says in err
    assert not (tmp_path / "lake").exists()


def test_crm_version_prints_the_package_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"crm {version('crm-pipeline')}"


def test_months_may_be_named_one_by_one_or_comma_separated_and_retrain_takes_yes_or_no():
    from datetime import date

    parse = cli.build_parser().parse_args
    jan, feb = date(2026, 1, 1), date(2026, 2, 1)
    assert parse(["analyse", "--lake", "x", "--month", "2026-01,2026-02"]).months == [jan, feb]
    assert parse(["analyse", "--lake", "x", "--month", "2026-01", "--month", "2026-02-01"]).months == [jan, feb]
    assert parse(["analyse", "--lake", "x", "--month", "2026-01-01,2026-02-01"]).months == [jan, feb]  # the DAG's
    assert parse(["analyse", "--lake", "x", "--require-month", "2026-02"]).required == [feb]
    assert parse(["publish", "--lake", "x", "--month", "2026-02"]).months == [feb]
    assert [parse(["train", "--lake", "x", *a]).retrain for a in ([], ["--retrain"], ["--retrain", "yes"],
                                                                  ["--retrain", "no"])] == [False, True, True, False]


@pytest.mark.parametrize("argv", [["analyse", "--lake", "x", "--month", "2026-13"],
                                  ["analyse", "--lake", "x", "--month", "2026-03-15"],  # not a month's first day
                                  ["analyse", "--lake", "x", "--require-month", "March"],
                                  ["publish", "--lake", "x", "--month", "2026-3"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == EXIT_USAGE
    assert "expected YYYY-MM" in capsys.readouterr().err


def test_a_failed_publish_exits_1_and_is_on_record_in_the_lake(tmp_path, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the warehouse folder should be")
    lake = LakeLayout(str(tmp_path / "lake"))
    code = cli.main(["publish", "--lake", lake.root, "--warehouse", f"duckdb:///{blocker}/w.duckdb",
                     "--run-id", "pub-1", "--dag-id", "crm_monthly_analytics"])
    assert code == EXIT_FAILED
    assert "crm publish: FAILED: publish failed: " in capsys.readouterr().err
    runs = DeltaTable(lake.ops("pipeline_runs")).to_pyarrow_table().to_pylist()
    assert len(runs) == 1
    row = runs[0]
    assert (row["run_id"], row["dag_id"], row["task_id"], row["status"]) == ("pub-1", "crm_monthly_analytics",
                                                                             "publish", "FAILED")
    assert row["message"].startswith("publish failed: ") and "not-a-dir" in row["message"]
    assert row["started_at"] <= row["finished_at"]


def test_failure_messages_name_the_error_and_mask_numbers():
    msg = ops.failure_message(ValueError("no holder for 8613800000001 on 2026-03-01\n\tat org.apache.Foo"))
    assert msg.startswith("ValueError: ") and "138******01" in msg and "13800000001" not in msg
    assert "2026-03-01" in msg
    assert ops.failure_message(PipelineError("gold_kpi_month: check x failed")) == "gold_kpi_month: check x failed"
    assert len(ops.failure_message(RuntimeError("x" * 5000))) == 2000
