"""`oomsweep` command line (also `python -m sweeps`): argparse and the exit codes, nothing else.

`main` is re-exported here because `[project.scripts]` names `sweeps.cli:main`."""

from sweeps.cli.commands import main

__all__ = ["main"]
