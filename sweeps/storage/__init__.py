"""The Parquet dataset: its declared schema (`schema`), reading and writing (`dataset`), the sweep lock (`lock`)."""
