"""Delta Lake read/write helpers and warehouse adapters."""
