"""Gold -> warehouse: atomic per table, re-publishing a month replaces that month."""
