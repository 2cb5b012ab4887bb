"""oomsweep's sweep service: YAML grids of oommodel scenarios run on Ray, stored in Parquet, logged to MLflow.

One sub-package per concern (README.md, "Layout"): spec (the sweep file, pure), run
(orchestration), execution (batches, Ray), storage (Parquet), analysis (statistics, reports),
tracking (MLflow), calibrate (QEMU), cli; errors.py holds every reported error and its exit code.
Importing this package has no side effects and imports neither Ray nor MLflow.
"""

__version__ = "0.1.0"
