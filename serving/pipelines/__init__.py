"""What the served pipelines do between model calls, free of Triton: index, search, delete, stats."""
