#!/usr/bin/env python
"""Write the built-in synthetic Pap-smear data set (PNGs + COCO jsons), or preview patches.

Examples:
    python scripts/make_synthetic.py --out datasets/synthetic --seed 0
    python scripts/make_synthetic.py --preview docs/synthetic_sample.png --grid 2 --palette

The generator: :mod:`dualalign.data.synthetic`; this command: its ``cli`` module.
"""

from dualalign.data.synthetic.cli import main

if __name__ == "__main__":
    main()
