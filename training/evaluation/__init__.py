"""Evaluation: the official protocols, our seeded near-duplicate benchmark and the DnS trade-off."""
