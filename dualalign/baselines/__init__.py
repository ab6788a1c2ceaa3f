"""Semi-supervised baselines of the paper's Table 2 (CSD, Mean Teacher) on the same trainer."""
