"""`crm warehouse init` (schemas, roles and grants of a server warehouse) and `crm warehouse
dictionary` (the data dictionary generated from schemas/tables)."""

from __future__ import annotations

import argparse
from pathlib import Path

from crm_pipeline.entrypoints.common import progress, setup_logging
from crm_pipeline.errors import EXIT_OK, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = sub.add_parser(
        "init", help="create the schemas crm, crm_restricted, crm_ops and the roles crm_loader, crm_bi, "
                     "crm_campaign with their grants (idempotent; run as the server's administrator)",
        description="Passwords of the roles come from CRM_WAREHOUSE_LOADER_PASSWORD, CRM_WAREHOUSE_BI_PASSWORD "
                    "and CRM_WAREHOUSE_CAMPAIGN_PASSWORD when set (a role without one cannot log in with a "
                    "password). Example: crm warehouse init --warehouse postgresql://postgres@db.example:5432/crm")
    init.add_argument("--warehouse", required=True, help="postgresql://admin@host[:port]/database")
    init.add_argument("-v", "--verbose", action="store_true")
    dictionary = sub.add_parser("dictionary", help="write the data dictionary of every published table "
                                                   "(Markdown, from schemas/tables)")
    dictionary.add_argument("--out", help="file to write (default: standard output)")


def run(args: argparse.Namespace) -> int:
    if args.action == "init":
        setup_logging(args.verbose)
        from crm_pipeline.publish.postgres import init_warehouse

        try:
            init_warehouse(args.warehouse, progress=progress)
        except ConnectionError as exc:
            raise UsageError(str(exc)) from None
        return EXIT_OK
    from crm_pipeline.publish.dictionary import data_dictionary

    text = data_dictionary()
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        progress(f"data dictionary written to {args.out}")
    else:
        print(text, end="")
    return EXIT_OK
