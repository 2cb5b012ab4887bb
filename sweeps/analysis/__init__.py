"""Statistics and reports over stored rows: `stats` (pure), `report`, `history`, `plots`."""
