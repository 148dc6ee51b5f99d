"""The benchmarks: scripts that measure dnarch and its baselines side by side and write a table with
the command that made it (``python benchmarks/<script>.py ...``, or ``python -m benchmarks.<script>``).
``benchmarks.runs`` is what the training benchmarks share: one run schema, one store, one table and
plot writer."""
