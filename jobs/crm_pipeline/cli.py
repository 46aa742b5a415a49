"""The `crm` command line: one subcommand per job, each a thin wrapper over an entrypoint."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


STEPS = "crm_pipeline.entrypoints.steps"

#: (subcommand, module, help), in the order `crm --help` lists them. A module has `add_arguments`
#: and `run`; the single steps of `crm run` share STEPS (`add_<step>_arguments` and `<step>`).
COMMANDS = (
    ("generate", "crm_pipeline.generate", "write synthetic BOSS deliveries into a landing zone"),
    ("ingest", "crm_pipeline.entrypoints.ingest", "load complete deliveries: landing -> bronze -> silver"),
    ("run", "crm_pipeline.entrypoints.run", "landing zone -> published warehouse tables (every layer)"),
    ("rollup", STEPS, "rebuild daily rollups for days whose silver changed"),
    ("analyse", STEPS, "build every gold mart for complete months, scored by the churn models in the registry"),
    ("train", STEPS, "train the churn models the complete months allow (model registry)"),
    ("publish", STEPS, "publish gold and ops tables to the warehouse"),
    ("maintain", STEPS, "compact and vacuum the lake's Delta tables, prune old Data Docs"),
    ("status", "crm_pipeline.entrypoints.status",
     "what arrived, what is late or rejected, last runs, months published or waiting"),
    ("report", "crm_pipeline.entrypoints.report",
     "the monthly CRM report of a lake: one self-contained HTML file with charts"),
    ("warehouse", "crm_pipeline.entrypoints.warehouse",
     "set up a server warehouse (schemas, roles); print the data dictionary"),
    ("demo", "crm_pipeline.entrypoints.demo", "generate a data set and run the pipeline on it"),
)


#: examples shown at the end of each command's --help
EXAMPLES = {
    "generate": ["crm generate --landing var/landing --subscribers 1000 --start 2026-01-01 --days 95 --seed 42"],
    "ingest": ["crm ingest --landing var/landing --lake var/lake",
               "crm ingest --landing s3a://boss-exports/ --lake s3a://crm-lake/ --from 2026-03-01 --to 2026-03-31 "
               "--feeds cdr_voice,cdr_sms"],
    "run": ["CRM_MSISDN_HMAC_KEY=... crm run --landing var/landing --lake var/lake "
            "--warehouse duckdb:///var/warehouse/warehouse.duckdb",
            "crm run --landing var/landing --lake var/lake --warehouse postgresql://crm_loader@db:5432/crm"],
    "rollup": ["crm rollup --lake var/lake"],
    "analyse": ["crm analyse --lake var/lake", "crm analyse --lake var/lake --month 2026-03",
                "crm analyse --lake var/lake --rescore"],
    "train": ["crm train --lake var/lake", "crm train --lake var/lake --retrain"],
    "publish": ["crm publish --lake var/lake --warehouse duckdb:///var/warehouse/warehouse.duckdb",
                "crm publish --lake var/lake --warehouse postgresql://crm_loader@db/crm --month 2026-03"],
    "maintain": ["crm maintain --lake var/lake",
                 "crm maintain --lake /data/crm/lake --tables silver --retain-days 30   # compacts small files, "
                 "vacuums what no version within 30 days needs, prunes old Data Docs"],
    "status": ["crm status --lake var/lake",
               "crm status --lake var/lake --landing var/landing --as-of 2026-03-05T09:00",
               "crm status --lake var/lake --json", "crm status --lake var/lake --alert"],
    "report": ["crm report --lake var/demo/lake", "crm report --lake var/lake --month 2026-03 --out march.html"],
    "warehouse": ["crm warehouse init --warehouse postgresql://postgres@db/crm",
                  "crm warehouse dictionary --out docs/data-dictionary.md"],
    "demo": ["crm demo", "crm demo --dir var/demo-5k --subscribers 5000"],
}


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from crm_pipeline import __version__

    parser = argparse.ArgumentParser(
        prog="crm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  crm demo\n  crm run --landing var/landing --lake var/lake --warehouse "
               "duckdb:///var/warehouse/warehouse.duckdb\n  crm status --lake var/lake\n"
               "  crm report --lake var/lake --month 2026-03\n\n`crm COMMAND --help` shows a command's options "
               "and examples; docs/runbook.md the daily operation.")
    parser.add_argument("--version", action="version", version=f"crm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name, help_ in COMMANDS:
        module = importlib.import_module(module_name)
        step = module_name == STEPS
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES[name]))
        getattr(module, f"add_{name}_arguments" if step else "add_arguments")(p)
        p.set_defaults(handler=f"{module_name}:{name if step else 'run'}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes (crm_pipeline.errors): 0 success; 1 a delivery or check failed, or a task crashed,
    each on record in crm_ops; 2 usage error (argparse exits 2 itself for bad arguments)."""
    args = build_parser().parse_args(argv)
    module_name, func_name = args.handler.split(":")
    import importlib

    from crm_pipeline import faults

    faults.arm()

    from crm_pipeline.errors import EXIT_FAILED, EXIT_USAGE, TaskFailed, UsageError

    handler = getattr(importlib.import_module(module_name), func_name)
    try:
        code = int(handler(args) or 0)
    except UsageError as exc:
        print(f"crm {args.command}: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except TaskFailed as exc:
        print(f"crm {args.command}: FAILED: {exc}", file=sys.stderr)
        code = EXIT_FAILED
    if argv is None and args.command in LEAVE_AT_ONCE:
        _leave(code)
    return code


#: commands that start no Spark and read the lake through delta-rs: run from the command line, they
#: leave as soon as their output is written. delta-rs's runtime threads can make the interpreter's
#: own shutdown abort afterwards ("terminate called without an active exception", SIGABRT), which
#: would turn a finished `crm status` into a failed one.
LEAVE_AT_ONCE = frozenset({"status"})


def _leave(code: int) -> None:
    import logging
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
