"""Distillation on unlabelled video: pair teachers, mined pairs, ITQ, losses, training loops, pack building."""
