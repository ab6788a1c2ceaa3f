#!/usr/bin/env python
"""Where dual alignment's extra step time goes: (c) against (b), op by op.

    python scripts/profile_step.py --device cuda --out results/speed/profile
    python scripts/profile_step.py --quick            # CPU-sized, to check it runs

What it times and profiles: :mod:`dualalign.benchmark.profile_step`.
"""

from dualalign.benchmark.profile_step import main

if __name__ == "__main__":
    main()
