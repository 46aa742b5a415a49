"""One `main`-style entry per job: parse args -> session -> read -> transform -> validate -> write."""
