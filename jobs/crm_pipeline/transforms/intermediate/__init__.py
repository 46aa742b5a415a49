"""Daily rollups: built once per changed day so monthly jobs never rescan raw CDRs."""
