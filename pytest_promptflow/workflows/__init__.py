"""agent-framework workflows as flows: ``maf:`` targets, the worker that runs them in their own environment,
and the session's side of it (worker clients, Python discovery, creating the environment)."""
