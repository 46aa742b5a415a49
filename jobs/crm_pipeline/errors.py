"""The kinds of failure every `crm` command tells apart, and its exit codes.

0 success; 1 a delivery or a check failed, or a task crashed (the rest was still processed where
it could be, and each failure is on record in crm_ops); 2 usage error (bad arguments, a missing
landing zone or secret), found before anything ran.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad arguments or configuration, found before any work: exit 2, nothing recorded."""


class PipelineError(RuntimeError):
    """An expected kind of failure whose message already says what failed (a data-quality check,
    the accounting identity): recorded and shown as it is, without the exception's class name."""


class TaskFailed(PipelineError):
    """A task failed and its failure is on record in crm_ops: exit 1."""
