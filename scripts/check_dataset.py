#!/usr/bin/env python
"""Check a labelled COCO set and/or an unlabelled pool with the loaders training uses.

Examples::

    python scripts/check_dataset.py --json data/annotations_train.json --images data/images
    python scripts/check_dataset.py --unlabeled data/unlabelled_patches/
    python scripts/check_dataset.py --unlabeled pool.txt --check-images header

Exit status: 0 when every given set is valid (a summary is printed on stdout), 1 on the
first problem (``error: <file>: <record>: <problem>; <fix>`` on stderr), 2 on bad arguments.
Warnings, such as boxes clipped to their image, go to stderr.
"""

import sys
import warnings

# Importing detectron2 triggers torch's deprecation notice for torch.jit.script: noise here.
warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated")

from dualalign.data.check_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
