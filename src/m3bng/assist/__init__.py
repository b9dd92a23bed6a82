"""Help for ops: suggestions worked out from what m3bng and M3 already know (no network beyond
the configured M3, no language model). ``fixes``: candidate fixes for a dead letter."""
