#!/usr/bin/env python
"""Speed and memory of dual alignment against its baselines, measured as ratios in one run.

    python scripts/bench.py --quick                 # CPU-sized, a few minutes
    python scripts/bench.py --device cuda           # paper setting: R-101-FPN, 1200 px, 4+4
    python scripts/bench.py --device cuda --amp     # the same with mixed precision

What is measured and how: :mod:`dualalign.benchmark.bench`. Writes
``results/speed/<machine>[-quick].json`` and ``.md``; the last stdout line is one JSON object
with the headline ratios (each the median of per-round ratios of interleaved repeats).
"""

from dualalign.benchmark.bench import main

if __name__ == "__main__":
    main()
