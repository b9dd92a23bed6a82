"""Declarative field mappings: YAML files in ``mappings/``, one per flow.

``load_mapping`` / ``load_mappings`` read and validate them (errors carry file and line);
``Mapping.render`` turns an event into the exact MI records a call would send.
"""

from m3bng.mapping.engine import CallPreview, Mapping, MappingError, render_call
from m3bng.mapping.loader import MappingFileError, combine, load_mapping, load_mappings, parse_mapping

__all__ = [
    "CallPreview",
    "Mapping",
    "MappingError",
    "MappingFileError",
    "combine",
    "load_mapping",
    "load_mappings",
    "parse_mapping",
    "render_call",
]
