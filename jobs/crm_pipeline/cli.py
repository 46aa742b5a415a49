"""The `crm` command line: one subcommand per job, each a thin wrapper over an entrypoint."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from crm_pipeline.generate import add_arguments as add_generate_arguments

    gen = sub.add_parser("generate", help="write synthetic BOSS deliveries into a landing zone")
    add_generate_arguments(gen)
    gen.set_defaults(handler="crm_pipeline.generate:run")

    from crm_pipeline.entrypoints import ingest

    ing = sub.add_parser("ingest", help="load complete deliveries: landing -> bronze -> silver")
    ingest.add_arguments(ing)
    ing.set_defaults(handler="crm_pipeline.entrypoints.ingest:run")

    from crm_pipeline.entrypoints import run

    rn = sub.add_parser("run", help="landing zone -> published warehouse tables (every layer)")
    run.add_arguments(rn)
    rn.set_defaults(handler="crm_pipeline.entrypoints.run:run")

    from crm_pipeline.entrypoints import steps

    for name, adder, help_ in (
        ("rollup", steps.add_rollup_arguments, "rebuild daily rollups for days whose silver changed"),
        ("analyse", steps.add_analyse_arguments, "build every gold mart for complete months, scored by the churn "
                                                 "models in the registry"),
        ("train", steps.add_train_arguments, "train the churn models the complete months allow (model registry)"),
        ("publish", steps.add_publish_arguments, "publish gold and ops tables to the warehouse"),
    ):
        p = sub.add_parser(name, help=help_)
        adder(p)
        p.set_defaults(handler=f"crm_pipeline.entrypoints.steps:{name}")

    from crm_pipeline.entrypoints import status

    st = sub.add_parser("status", help="what arrived, what is late or rejected, last runs, months published or waiting")
    status.add_arguments(st)
    st.set_defaults(handler="crm_pipeline.entrypoints.status:run")

    from crm_pipeline.entrypoints import warehouse

    wh = sub.add_parser("warehouse", help="set up a server warehouse (schemas, roles); print the data dictionary")
    warehouse.add_arguments(wh)
    wh.set_defaults(handler="crm_pipeline.entrypoints.warehouse:run")

    from crm_pipeline.entrypoints import demo

    dem = sub.add_parser("demo", help="generate a data set and run the pipeline on it")
    demo.add_arguments(dem)
    dem.set_defaults(handler="crm_pipeline.entrypoints.demo:run")
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
        return int(handler(args) or 0)
    except UsageError as exc:
        print(f"crm {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TaskFailed as exc:
        print(f"crm {args.command}: FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
