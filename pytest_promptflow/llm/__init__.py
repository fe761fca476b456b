"""LLM access: the embedded local model server and connection resolution."""
