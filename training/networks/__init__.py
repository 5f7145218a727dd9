"""The DnS networks (students, selector, ViSiL head, frame feature extractors), their layers and checkpoint loading."""
