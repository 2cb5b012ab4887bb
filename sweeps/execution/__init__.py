"""Running batches of callables: in this process or as Ray tasks.  Knows nothing of oommodel."""
