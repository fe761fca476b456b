"""Where a release registers its datasets and its flow: MLflow (local, default) or Azure ML."""
