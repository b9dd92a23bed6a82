"""Help for ops and mapping authors: suggestions worked out from what m3bng and M3 already know,
each with its reasons, so a person decides. ``fixes``: candidate fixes for a dead letter (no
network beyond the configured M3, no language model). ``suggest``: which path of a sample
payload fills which field of an M3 transaction, for writing mappings (offline; ``rerank`` lets a
configured model re-order them, off by default); ``render``: their table and a draft mapping."""
