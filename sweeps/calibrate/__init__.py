"""`oomsweep calibrate`: a scenario run on a real kernel under QEMU beside the model.

`translate` (scenario -> reproducer plan), `qemu` (boot), `kernel_log` (console log -> outcome),
`command` (the command: rows, table, MLflow)."""
