"""`reid demo`, the main job: synthetic dataset -> train -> export -> embedded service ->
bulk index through the API -> queries, metrics and example matches.

Orchestration only: it drives `training`, `export` and `service` (imported lazily) and talks
to the service over HTTP like any client. Kept out of `reidcore`, which stays numpy-only.
"""
