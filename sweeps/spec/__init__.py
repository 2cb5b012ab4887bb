"""The sweep file: its validated value (`model`), YAML parsing and validation (`parse`), key paths
(`keypath`), grid expansion (`grid`) and cell identity (`identity`).  Pure: no Ray, MLflow or Arrow."""
