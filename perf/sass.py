"""Alias: ``python -m perf.sass ...`` = ``python -m perf.compile_stats sass ...`` (the SASS proxy;
see ``perf/compile_stats.py``)."""
from __future__ import annotations

import sys

from perf.compile_stats import sass_main as main

if __name__ == "__main__":
    sys.exit(main())
