"""The benchmark harness: msgstore against the Go reference, a naive writer and the floor.

``python -m benchmarks --help`` runs it; ``benchmarks/README.md`` says how to read it.
Modules: ``workload`` (the producer, identical to the Go ``bench`` command), ``stores``
(the Python rows), ``measure`` (CPU, RSS, SQL counters, WAL bytes), ``runner`` (one row
in one fresh process), ``gobench`` (the Go row), ``matrix`` (the cases), ``report``
(table, targets, RESULTS.md).
"""
