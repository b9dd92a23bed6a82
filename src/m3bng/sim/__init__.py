"""Simulators of the systems m3bng connects: real HTTP servers for the sandbox, tests and benchmarks.

Production code never imports this package, except ``m3bng.sandbox`` when no real system is
configured.
"""
