"""Performance harness of pac_triton: ``python -m perf`` from the repository root, or the
``pac-perf`` console script once installed (as ``pac_triton.perf``). See ``perf/__main__.py``
for the options, ``perf/cases.py`` for the sweeps, presets and documented FLOP/byte counts,
and ``perf/NOTES.md`` for the floors, predictions and the results log."""
