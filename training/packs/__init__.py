"""Model packs: the checkpoints that serve together, and the bundled offline pack (`bundled/`)."""
