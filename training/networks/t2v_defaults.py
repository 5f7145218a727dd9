"""The offline text-video student's default settings, in one place free of heavy imports (the `dnsvr train t2v`
help reads them without importing torch)."""

DEFAULT_DIM = 256  # embedding size of the student's text and video vectors
DEFAULT_DEPTH = 2  # temporal transformer blocks
DEFAULT_MAX_FRAMES = 12  # frames aggregated per video (TeachCLIP's MSR-VTT / MSVD / VATEX setting)
TEACHER_TEMPERATURE = 0.05  # teacher similarity / this = its logits in TeachCLIP's coarse loss (x 20)
