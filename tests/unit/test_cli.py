"""The command line as a person meets it: every command's help ends with examples that parse, and
progress bars are drawn on a terminal only (never into Airflow logs or a pipe)."""

from __future__ import annotations

import fcntl
import os
import pty
import shlex
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from crm_pipeline import cli

CRM = [sys.executable, "-m", "crm_pipeline.cli"]


@pytest.mark.parametrize("command", [c[0] for c in cli.COMMANDS])
def test_every_command_documents_examples_that_parse(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "\nexamples:\n" in text
    examples = cli.EXAMPLES[command]
    assert examples and all(f"  {e}" in text for e in examples)
    for example in examples:
        # drop VAR=... prefixes
        argv = [w for w in shlex.split(example, comments=True) if "=" not in w or w.startswith("-")]
        assert argv[0] == "crm"
        cli.build_parser().parse_args(argv[1:])  # exits 2 on an example that no longer parses


def test_top_level_help_points_at_the_commands_and_examples(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert all(name in text for name, _, _ in cli.COMMANDS)
    assert "examples:" in text and "`crm COMMAND --help`" in text


def _generate(landing: Path) -> list[str]:
    return [*CRM, "generate", "--landing", str(landing), "--subscribers", "40", "--start", "2026-01-01",
            "--days", "20", "--seed", "1", "--progress", "none"]


def test_no_progress_bar_when_output_is_not_a_terminal(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CRM_PROGRESS"}
    done = subprocess.run(_generate(tmp_path / "landing"), capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "\r" not in out and "%|" not in out
    assert "[generate] wrote" in done.stderr  # the progress lines are all there is


def test_progress_bar_on_a_terminal(tmp_path):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**{k: v for k, v in os.environ.items() if k != "CRM_PROGRESS"}, "TERM": "xterm"}
    proc = subprocess.Popen(_generate(tmp_path / "landing"), stdin=slave, stdout=slave, stderr=slave, env=env,
                            close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "generate" in text and "%|" in text and "/20 days" in text
    assert "[generate] wrote" in text


def test_the_demo_shows_an_example_query_with_no_rows_yet_and_goes_on(tmp_path, monkeypatch, capsys):
    """A smaller demo may have no churn model yet: its example query answers no rows, which the
    demo says, and it shows the queries after it."""
    import duckdb

    from crm_pipeline.entrypoints import demo

    wh = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(wh))
    con.execute("CREATE TABLE models (model_version VARCHAR, auc DOUBLE)")
    con.execute("CREATE TABLE kpi (month DATE, active_subscribers BIGINT)")
    con.execute("INSERT INTO kpi VALUES ('2026-06-01', 197)")
    con.close()
    monkeypatch.setattr(demo, "EXAMPLE_QUERIES", (("Models", "SELECT * FROM models"), ("KPIs", "SELECT * FROM kpi")))
    demo.show(wh, 60.0, tmp_path / "lake")
    out = capsys.readouterr().out
    assert "-- Models\nSELECT * FROM models;\n  (no rows yet)\n\n-- KPIs" in out
    assert "  month       active_subscribers\n  2026-06-01  197" in out


def test_a_failed_task_is_reported_once_with_exit_1(tmp_path):
    (tmp_path / "landing").mkdir()
    (tmp_path / "jars").mkdir()  # no Delta jars: Spark cannot start
    env = {**os.environ, "CRM_JAR_DIR": str(tmp_path / "jars")}
    done = subprocess.run([sys.executable, "-m", "crm_pipeline.cli", "ingest", "--landing", str(tmp_path / "landing"),
                           "--lake", str(tmp_path / "lake")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("no Delta jars in") == 1, done.stderr
    assert "crm ingest: FAILED: starting Spark failed: " in done.stderr
