"""CRM analytics over a mobile operator's BOSS exports.

Landing zone -> bronze (raw, with lineage) -> silver (typed, deduplicated, subscriber-mapped)
-> gold (subscriber-month facts, value, churn) -> warehouse.
"""

__version__ = "0.1.0"
