"""Agent-framework workflows as flows: the session side and the worker that runs them in their own environment."""
