"""Data: video decoding, video files, HDF5 features, synthetic near-duplicates and the training corpus."""
