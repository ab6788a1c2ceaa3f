#!/usr/bin/env python
"""Reproduce the paper's Tables 1 and 2: every method x labelled fraction x seed, one command.

    python scripts/run_benchmark.py --dataset synthetic --preset cpu
    python scripts/run_benchmark.py --dataset cervix93 --data-root datasets/cervix93
    python scripts/run_benchmark.py --dataset cervix93 --class-agnostic --data-root ...

Each run is ``train_net.py`` in its own process; finished runs are skipped, interrupted ones
resumed. Outputs, under ``results/<dataset>/``: ``results.json`` (every run), ``tables.md``
(Tables 1 and 2, mean +- std over seeds), ``map_vs_fraction.png`` and ``runs/<run>/``
(``result.json`` and ``metrics.json`` of each). How: :mod:`dualalign.benchmark.harness`.
"""

import sys

from dualalign.benchmark.harness import main

if __name__ == "__main__":
    sys.exit(main())
