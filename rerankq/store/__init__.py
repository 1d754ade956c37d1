"""The SQL ledger: jobs, chunks, scores, the score cache, workers and webhooks (a package, so lint-imports sees it)."""
