"""Feed field lists, read from the versioned feed schemas (``schemas/feeds/<feed>.json``).

The schema files are the single source of field order: the generator renders every line
by walking the field list loaded here, never a retyped copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DAILY_FEEDS: tuple[str, ...] = (
    "subscriber",
    "plan",
    "cdr_voice",
    "cdr_sms",
    "cdr_data",
    "recharge",
    "ticket",
    "survey",
)
"""Feeds delivered every business day (``survey`` included, empty on days without answers)."""

MONTHLY_FEEDS: tuple[str, ...] = ("bill",)
ALL_FEEDS: tuple[str, ...] = DAILY_FEEDS + MONTHLY_FEEDS
CDR_FEEDS: tuple[str, ...] = ("cdr_voice", "cdr_sms", "cdr_data")
EVENT_FEEDS: tuple[str, ...] = ("cdr_voice", "cdr_sms", "cdr_data", "recharge", "ticket", "survey")


def default_schema_dir() -> Path:
    """The project's ``schemas/feeds`` folder (``CRM_RESOURCES_DIR`` when deployed elsewhere)."""
    from crm_pipeline.settings import resource_dir

    return resource_dir("schemas") / "feeds"


@dataclass(frozen=True)
class FeedSchema:
    """Field names and per-field rules of one feed, in column order."""

    feed: str
    fields: tuple[str, ...]
    nullable: tuple[bool, ...]
    key: str
    event_time: str | None

    def index(self, name: str) -> int:
        """Position of field ``name`` in a line."""
        return self.fields.index(name)


def load_feed_schemas(schema_dir: Path | None = None) -> dict[str, FeedSchema]:
    """Load every feed schema the generator writes, keyed by feed name.

    Raises ``FileNotFoundError`` naming the missing file when a feed schema is absent.
    """
    folder = Path(schema_dir) if schema_dir is not None else default_schema_dir()
    schemas: dict[str, FeedSchema] = {}
    for feed in ALL_FEEDS:
        path = folder / f"{feed}.json"
        if not path.is_file():
            raise FileNotFoundError(f"feed schema {path} not found (needed for feed {feed!r})")
        doc = json.loads(path.read_text(encoding="utf-8"))
        fields = tuple(f["name"] for f in doc["fields"])
        nullable = tuple(bool(f.get("nullable", False)) for f in doc["fields"])
        schemas[feed] = FeedSchema(
            feed=feed,
            fields=fields,
            nullable=nullable,
            key=doc["key"][0],
            event_time=doc.get("event_time"),
        )
    return schemas
