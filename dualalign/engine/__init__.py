"""dualalign.engine: the semi-supervised trainer, checkpoints, launch and setup helpers."""
