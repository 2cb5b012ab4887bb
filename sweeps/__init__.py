"""oomsweep's sweep service: YAML grids of oommodel scenarios run on Ray, stored in Parquet, logged to MLflow.

One module per concern: spec (validation), grid and identity (pure), executor
(Ray), storage and schema (Parquet), tracking and plots (MLflow), stats and
report (pure statistics), runner (orchestration), cli.  Importing this package
has no side effects and imports neither Ray nor MLflow.
"""

__version__ = "0.1.0"
