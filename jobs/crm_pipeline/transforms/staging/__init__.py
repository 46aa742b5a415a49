"""Bronze -> silver: split, type, validate, map numbers to subscriptions, deduplicate."""
