"""Pure DataFrame -> DataFrame transforms: no session, no I/O, no environment."""
