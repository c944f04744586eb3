"""Frame → addressed verdict: alignment, NSOARTC metric, address grid, judges, decision."""
