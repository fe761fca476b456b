"""Deployment targets of a release (local, docker, kubernetes, azureml) and the endpoint test."""
