"""Runtimes side by side on this machine's CPU: PyTorch eager, channels-last, ONNX Runtime fp32 and int8;
int8's accuracy change; and tiled against whole-image prediction of a 1024 px face.

    python bench/runtimes.py [--checkpoint runs/quickstart-*/checkpoints/best.pt] [--size 512] [--repeats 5] [--threads N]

Exactly two JSON lines on stdout (logs on stderr):

1. "bench": "runtimes". Speed: seconds per --size px image (batch 1) of the product's default network,
   config.yaml's model section (ResNet50 attention U-Net), built with random weights (nothing can be
   downloaded; speed does not depend on the weights), as
   - PyTorch eager, float32, NCHW, no_grad;
   - PyTorch eager, float32, channels-last (model and input);
   - ONNX Runtime fp32: engine.onnx_model.export_checkpoint's file in an OnnxNetwork session;
   - ONNX Runtime int8: the same export, static QDQ int8 calibrated on --calibration-faces faces.
   PyTorch runs on --threads intra-op threads (default torch.get_num_threads(), the cores), ONNX
   Runtime on as many. The input is a face, not noise: the calibration faces are quickstart synthetic face
   images of the TRAIN split (data_cache/synthetic-quickstart, split as data/splits.py defines it from
   the checkpoint's config), prepared by engine.segment_photos.calibration_inputs exactly as predict.py
   --face-masks prepares them (padded to a square, resized to --size, zeroed off skin: config.yaml's
   data.zero_non_skin), i.e. float32 1 x 3 x size x size arrays in [0, 1]; the first one is timed.
   Each variant gets one warm-up call, then --repeats rounds that call every variant once in turn (the
   host's speed drifts; interleaving spreads the drift over all of them); the figure is the median,
   and "speedup_vs_eager" is eager's median over the variant's, all in this one process.
   Accuracy: the quickstart checkpoint (--checkpoint; default the newest runs/quickstart-*/checkpoints/
   best.pt) exported fp32 and int8 (calibrated on --calibration-faces faces of its TRAIN split, never
   test, prepared as above at its own resolution), each scored by engine.scoring.evaluate_checkpoint(...,
   split="test", runtime="onnx") into a temporary folder at the checkpoint's validation threshold;
   iou and dice (pooled) of both and the deltas int8 - fp32. The PyTorch checkpoint's own test scores
   are listed too, for reference. "meets_targets": ONNX Runtime fp32 no slower than eager, int8 at
   least 1.8x eager, |delta iou| and |delta dice| at most 0.01.

2. "bench": "tiled_vs_whole". The quickstart checkpoint in PyTorch eager on one 1024 x 1024 face: the
   first 1024 px image of ../shared/data/ffhq-faces/images1024 (a real FFHQ-framed face; its README),
   else a synthetic face rendered at 1024 (data/synthetic.py), prepared as predict.py prepares a photo
   for that checkpoint (its face config: quickstart's align none, skin none; zero_non_skin) at 1024 px:
   whole at once (tile 0) vs 512 px tiles with 64 px overlap (engine.inference.model_predictor(...,
   tile=512, overlap=64)). Each variant runs in its own fresh process (this script, --child): one
   prediction that also warms up, then 3 timed ones (median). Memory: "peak_rss_mib" is the process's
   absolute peak resident memory (VmHWM of /proc/self/status) after the first prediction, and
   "peak_added_mib" that peak minus VmHWM just before it (model loaded, face prepared), i.e. what the
   prediction itself added at its peak. "mask_pixels_differing" is the share of the 1024 x 1024 pixels
   whose mask (probability >= the checkpoint's threshold, or 0.5) differs between tiled and whole.

Takes about 2.5 minutes on 2 idle cores; line 1 records the 1-minute load average at start, since
anything else running on the CPU slows every figure (eager at 512 px took 3.9 s instead of 0.6 s
beside a running test suite). Without a quickstart checkpoint it stops with a one-line message:
run `bash quickstart.sh` (or train configs/quickstart.yaml) first.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import glob
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

log = logging.getLogger("bench.runtimes")

FACE_SIZE, TILE, OVERLAP, TILED_REPEATS = 1024, 512, 64, 3
TARGET_INT8_SPEEDUP, TARGET_DELTA = 1.8, 0.01
FFHQ_1024 = PROJECT_ROOT.parent / "shared" / "data" / "ffhq-faces" / "images1024"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def newest_checkpoint() -> Path | None:
    """The newest runs/quickstart-*/checkpoints/best.pt (by modification time), or None."""
    found = [Path(p) for p in glob.glob(str(PROJECT_ROOT / "runs" / "quickstart-*" / "checkpoints" / "best.pt"))]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def vm_hwm_mib() -> float:
    """This process's peak resident memory so far (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (not Linux?)")


def train_calibration_folder(cfg, folder: Path, count: int) -> list[str]:
    """Symlinks to `count` TRAIN-split faces of the checkpoint's data (evenly spread over the split, sorted
    by id) in folder/images and their skin masks in folder/face_masks; returns their ids."""
    from data.dataset import split_samples

    splits = split_samples(cfg)
    train = [s for s in splits["train"] if s.face_mask is not None]
    held_out = {s.id for split in ("val", "test") for s in splits[split]}
    if not train:
        raise SystemExit("the checkpoint's data has no train faces with skin masks to calibrate int8 on")
    step = max(len(train) / count, 1.0)
    picked = [train[int(i * step)] for i in range(min(count, len(train)))]
    assert not held_out & {s.id for s in picked}, "calibration faces must come from the train split only"
    (folder / "images").mkdir(parents=True)
    (folder / "face_masks").mkdir()
    for sample in picked:
        (folder / "images" / f"{sample.id}{sample.image.suffix}").symlink_to(sample.image.resolve())
        (folder / "face_masks" / f"{sample.id}{sample.face_mask.suffix}").symlink_to(sample.face_mask.resolve())
    return [s.id for s in picked]


def interleaved_medians(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each call: one warm-up call each, then `repeats` rounds calling each in turn."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for name, call in variants.items():
        start = time.perf_counter()
        call()
        log.info("%s: warm-up %.2f s", name, time.perf_counter() - start)
    for round_ in range(repeats):
        for name, call in variants.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
        log.info("round %d/%d: %s", round_ + 1, repeats, ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()))
    return {name: statistics.median(t) for name, t in times.items()}


def speed(args, calibration_folder: Path, scratch: Path) -> dict:
    """Seconds per image of config.yaml's network in the four runtimes, and the ratios to eager."""
    import torch

    from config import load_config
    from engine.onnx_model import OnnxNetwork, export_checkpoint
    from engine.segment_photos import calibration_inputs
    from unet import build_model

    cfg = load_config(PROJECT_ROOT / "config.yaml", ["model.encoder_weights=null", f"data.image_size={args.size}"])
    calibration = calibration_inputs(cfg, calibration_folder / "images", calibration_folder / "face_masks", limit=args.calibration_faces)
    torch.manual_seed(0)
    model = build_model(cfg.model, encoder_weights=False).eval()
    files = {}
    for precision, inputs in (("fp32", None), ("int8", calibration)):
        start = time.perf_counter()
        files[precision] = export_checkpoint(model, cfg, scratch / f"speed_{precision}.onnx", 0.5, None, "random weights", inputs)
        log.info("exported %s (%s) in %.1f s", cfg.model.arch, precision, time.perf_counter() - start)
    threads = torch.get_num_threads()
    sessions = {p: OnnxNetwork(f.read_bytes(), str(f), torch.device("cpu"), threads) for p, f in files.items()}
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.from_numpy(calibration[0])
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def eager(net, image):
        def call():
            with torch.no_grad():
                return net(image)

        return call

    medians = interleaved_medians(
        {
            "torch_eager_fp32": eager(model, x),
            "torch_channels_last_fp32": eager(channels_last, x_cl),
            "onnxruntime_fp32": lambda: sessions["fp32"](x),
            "onnxruntime_int8": lambda: sessions["int8"](x),
        },
        args.repeats,
    )
    base = medians["torch_eager_fp32"]
    return {
        "model": f"config.yaml model: {cfg.model.arch} {cfg.model.encoder}, random weights, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters",
        "image": f"1x3x{args.size}x{args.size} float32, batch 1",
        "seconds": {name: round(s, 4) for name, s in medians.items()},
        "speedup_vs_eager": {name: round(base / s, 3) for name, s in medians.items()},
        "onnx_mib": {p: round(f.stat().st_size / 2**20, 1) for p, f in files.items()},
        "speed_calibration_faces": len(calibration),
    }


def accuracy(args, checkpoint: Path, calibration_folder: Path, scratch: Path) -> dict:
    """Test-split iou and dice of the checkpoint exported fp32 and int8 (ONNX Runtime), and the deltas."""
    import torch

    from engine.inference import load_model
    from engine.onnx_model import export_checkpoint, source_label
    from engine.scoring import evaluate_checkpoint
    from engine.segment_photos import calibration_inputs

    model, cfg, state = load_model(checkpoint, torch.device("cpu"))
    calibration = calibration_inputs(cfg, calibration_folder / "images", calibration_folder / "face_masks", limit=args.calibration_faces)
    threshold = "auto" if state.get("threshold") is not None else None
    label, scores = source_label(checkpoint), {}

    def score(network: Path, name: str, runtime: str) -> dict:
        return evaluate_checkpoint(
            network, scratch / f"eval_{name}", split="test", threshold=threshold, runtime=runtime, threads=args.threads
        )

    for precision, inputs in (("fp32", None), ("int8", calibration)):
        exported = scratch / f"quickstart_{precision}.onnx"
        export_checkpoint(model, cfg, exported, state.get("threshold"), state.get("epoch"), label, inputs)
        scores[precision] = score(exported, precision, "onnx")
    scores["torch"] = score(checkpoint, "torch", "torch")
    fp32, int8, torch_report = scores["fp32"], scores["int8"], scores["torch"]
    return {
        "checkpoint": str(checkpoint),
        "test_images": fp32.get("n_images"),
        "threshold": round(fp32["threshold"], 4),
        "calibration_faces": f"{len(calibration)} train-split faces at {cfg.data.image_size} px",
        "iou": {"torch": round(torch_report["iou"], 4), "onnx_fp32": round(fp32["iou"], 4), "onnx_int8": round(int8["iou"], 4)},
        "dice": {"torch": round(torch_report["dice"], 4), "onnx_fp32": round(fp32["dice"], 4), "onnx_int8": round(int8["dice"], 4)},
        "delta_iou": round(int8["iou"] - fp32["iou"], 4),
        "delta_dice": round(int8["dice"] - fp32["dice"], 4),
    }


def face_image() -> tuple:
    """(RGB uint8 face, description): the first 1024 px FFHQ face in ../shared/data, else a synthetic one."""
    from data.image_io import read_rgb

    if FFHQ_1024.is_dir():
        for path in sorted(FFHQ_1024.glob("*.png")):
            image = read_rgb(path)
            if image.shape[:2] == (FACE_SIZE, FACE_SIZE):
                return image, f"FFHQ {path.name} (../shared/data/ffhq-faces/images1024)"
    from data.synthetic import render_face

    return render_face(1234, FACE_SIZE, FACE_SIZE).image, f"synthetic face rendered at {FACE_SIZE} px (seed 1234)"


def child(args) -> None:
    """One variant of line 2 in this fresh process: its JSON on stdout, its probabilities to --child-output."""
    import numpy as np
    import torch

    from engine.inference import inference_amp, load_model, model_predictor
    from engine.segment_photos import model_input
    from face.crop import FaceCropper

    model, cfg, _ = load_model(args.checkpoint, torch.device("cpu"))
    image, source = face_image()
    crop = FaceCropper(cfg.face, FACE_SIZE, "cpu")(image)
    face = model_input(crop, cfg.data.zero_non_skin, cfg.model.input == "rgb_texture")
    batch = {"image": torch.from_numpy(np.ascontiguousarray(face.transpose(2, 0, 1)[None]))}
    tile, overlap = (TILE, OVERLAP) if args.child == "tiled" else (0, 0)
    device = torch.device("cpu")
    predict = model_predictor(model, device, inference_amp(cfg.train.amp, device), cfg.train.channels_last, "none", tile, overlap)
    before = vm_hwm_mib()
    probs = predict(batch)[1]
    peak = vm_hwm_mib()
    times = []
    for _ in range(TILED_REPEATS):
        start = time.perf_counter()
        predict(batch)
        times.append(time.perf_counter() - start)
    np.save(args.child_output, probs[0].float().numpy())
    row = {"seconds": statistics.median(times), "peak_rss_mib": peak, "peak_added_mib": peak - before, "face": source}
    print(json.dumps(row), flush=True)


def tiled_vs_whole(args, checkpoint: Path, scratch: Path) -> dict:
    """Line 2: each variant in its own process; the share of mask pixels that differ."""
    import numpy as np
    import torch

    from engine.checkpoint import load_checkpoint

    stored = load_checkpoint(checkpoint).get("threshold")
    threshold = float(stored) if stored is not None else 0.5
    rows, probs = {}, {}
    for variant in ("whole", "tiled"):
        output = scratch / f"{variant}.npy"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--checkpoint", str(checkpoint)]
        command += ["--threads", str(args.threads), "--child-output", str(output)]
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, cwd=PROJECT_ROOT)
        rows[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        probs[variant] = np.load(output)
        log.info("%s: %s", variant, rows[variant])
    whole, tiled = (probs["whole"] >= threshold), (probs["tiled"] >= threshold)
    return {
        "bench": "tiled_vs_whole",
        "checkpoint": str(checkpoint),
        "face": rows["whole"]["face"],
        "image": f"{FACE_SIZE}x{FACE_SIZE}",
        "tile": TILE,
        "overlap": OVERLAP,
        "runtime": "torch eager fp32",
        "seconds": {v: round(r["seconds"], 4) for v, r in rows.items()},
        "tiled_vs_whole_time": round(rows["tiled"]["seconds"] / rows["whole"]["seconds"], 3),
        "peak_rss_mib": {v: round(r["peak_rss_mib"], 1) for v, r in rows.items()},
        "peak_added_mib": {v: round(r["peak_added_mib"], 1) for v, r in rows.items()},
        "threshold": round(threshold, 4),
        "mask_pixels_whole": int(whole.sum()),
        "mask_pixels_tiled": int(tiled.sum()),
        "mask_pixels_differing": round(float((whole != tiled).mean()), 6),
        "max_abs_prob_difference": round(float(np.abs(probs["whole"] - probs["tiled"]).max()), 4),
        "repeats": TILED_REPEATS,
        "memory": "each variant in a fresh process; peak_rss_mib: VmHWM after the first prediction; "
        "peak_added_mib: that minus VmHWM just before it",
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a quickstart checkpoint (default: newest runs/quickstart-*/checkpoints/best.pt)")
    parser.add_argument("--size", type=int, default=512, help="image size of the speed measurement, px (default 512)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up (default 5)")
    parser.add_argument("--threads", type=int, help="intra-op threads of PyTorch and ONNX Runtime (default: torch's, the cores)")
    parser.add_argument("--calibration-faces", type=int, default=16, help="train-split faces int8 is calibrated on (default 16)")
    parser.add_argument("--child", choices=("whole", "tiled"), help=argparse.SUPPRESS)
    parser.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1 or args.size < 32 or args.calibration_faces < 1:
        parser.error("--repeats and --calibration-faces must be at least 1, --size at least 32")

    import torch

    from engine.cli import setup_logging

    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    checkpoint = args.checkpoint if args.checkpoint is not None else newest_checkpoint()
    if checkpoint is None or not checkpoint.is_file():
        where = checkpoint if checkpoint is not None else "runs/quickstart-*/checkpoints/best.pt"
        sys.exit(f"no quickstart checkpoint at {where}: run `bash quickstart.sh` (or train.py --config configs/quickstart.yaml) first")
    args.checkpoint = checkpoint.resolve()
    os.chdir(PROJECT_ROOT)  # the checkpoint's data paths (data_cache/...) are relative to the project
    setup_logging(quiet=args.child is not None)
    if args.child is not None:
        child(args)
        return

    import onnxruntime

    from engine.inference import load_model

    started, load_at_start = time.perf_counter(), round(os.getloadavg()[0], 2)
    if load_at_start > 0.5:
        log.warning("load average %.2f at start: processes still running share the CPU and slow every figure", load_at_start)
    _, ckpt_cfg, _ = load_model(args.checkpoint, torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as tmp:
        scratch = Path(tmp)
        ids = train_calibration_folder(ckpt_cfg, scratch / "calibration", args.calibration_faces)
        log.info("calibration faces (train split): %s", ", ".join(ids))
        row = {"bench": "runtimes", **speed(args, scratch / "calibration", scratch)}
        row["accuracy"] = accuracy(args, args.checkpoint, scratch / "calibration", scratch)
        seconds, quality = row["seconds"], row["accuracy"]
        row["meets_targets"] = {
            "onnxruntime_fp32_not_slower_than_eager": seconds["onnxruntime_fp32"] <= seconds["torch_eager_fp32"],
            f"int8_at_least_{TARGET_INT8_SPEEDUP}x_eager": row["speedup_vs_eager"]["onnxruntime_int8"] >= TARGET_INT8_SPEEDUP,
            f"abs_delta_iou_at_most_{TARGET_DELTA}": abs(quality["delta_iou"]) <= TARGET_DELTA,
            f"abs_delta_dice_at_most_{TARGET_DELTA}": abs(quality["delta_dice"]) <= TARGET_DELTA,
        }
        row.update(
            repeats=args.repeats,
            load_average_1min_at_start=load_at_start,
            cpu=cpu_name(),
            torch_threads=torch.get_num_threads(),
            onnxruntime_threads=args.threads,
            versions={"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        )
        print(json.dumps(row), flush=True)
        print(json.dumps(tiled_vs_whole(args, args.checkpoint, scratch)), flush=True)
    log.info("done in %.0f s", time.perf_counter() - started)


if __name__ == "__main__":
    main()
