"""Stage benchmarks used by scripts/bench-stages."""
