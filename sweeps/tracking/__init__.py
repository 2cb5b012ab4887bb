"""MLflow: the per-policy comparison of a stored sweep execution (`mlflow_log`)."""
