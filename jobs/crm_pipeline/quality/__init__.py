"""Great Expectations suites (expectations/<table>.json) run inside the jobs before each write."""
