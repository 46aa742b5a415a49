"""Customer models fitted and scored outside Spark: retention (sBG) and lifetime value."""
