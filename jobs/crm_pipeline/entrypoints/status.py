"""`crm status`: the operations view of a lake (crm_pipeline.status)."""

from __future__ import annotations

import argparse

from crm_pipeline.entrypoints.common import check_lake, local_time
from crm_pipeline.errors import EXIT_FAILED, EXIT_OK, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lake", required=True, help="Delta Lake root (local path or Hadoop URI)")
    parser.add_argument("--landing", help="landing zone root: also show deliveries arrived but not ingested, "
                                          "and folders still without their control file")
    parser.add_argument("--as-of", type=local_time,
                        help="judge lateness at this local time (YYYY-MM-DDTHH:MM, timezone of "
                             "config/operations.json; default: now)")
    parser.add_argument("--days", type=int, default=None, help="business days to look back over (default 7)")
    parser.add_argument("--runs", type=int, default=10, help="runs to list (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--alert", action="store_true",
                        help="send an alert (crm_pipeline.alerts) for late or failed deliveries and exit 1 "
                             "when there are any")


def run(args: argparse.Namespace) -> int:
    from crm_pipeline import alerts, status
    from crm_pipeline.settings import LakeLayout

    days = args.days if args.days is not None else status.DAYS
    if days < 1 or args.runs < 0:
        raise UsageError("--days must be at least 1 and --runs at least 0")
    check_lake(args.lake, "ops", "wrote")
    lake = LakeLayout(args.lake)
    st = status.status(lake, args.as_of, days, args.runs, args.landing)
    print(st.as_json() if args.json else status.render(st, f"lake {args.lake}", days))
    late = st.late()
    if args.alert and late:
        alerts.send(f"{len(late)} late or failed deliveries (as of {st.as_of:%Y-%m-%d %H:%M})",
                    [f"{d['feed']} {d['business_date']}: {d['status']}"
                     + (f", {d['hours_late']} h past {d['expected_by']:%Y-%m-%d %H:%M}" if d["hours_late"] else "")
                     + (f": {d['detail']}" if d["detail"] else "") for d in late])
        return EXIT_FAILED
    return EXIT_OK
