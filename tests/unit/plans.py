"""Reading a DataFrame's optimized logical plan in tests: which operator sits below which."""

from __future__ import annotations

from pyspark.sql import DataFrame

_TREE = " :+-"


def plan_lines(df: DataFrame) -> list[str]:
    return df._jdf.queryExecution().optimizedPlan().toString().splitlines()


def below(df: DataFrame, parent: str, child: str) -> bool:
    """Whether a plan node whose line holds `child` sits in the subtree of one whose line holds
    `parent` (both plain substrings of the node's line, e.g. "Window [" and "Join LeftSemi")."""
    lines = plan_lines(df)
    for i, line in enumerate(lines):
        if parent not in line:
            continue
        depth = len(line) - len(line.lstrip(_TREE))
        for under in lines[i + 1:]:
            if len(under) - len(under.lstrip(_TREE)) <= depth:
                break
            if child in under:
                return True
    return False
