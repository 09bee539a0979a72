"""See the wrinkles on your own face: a local web page over predict.py's path (Gradio).

    python app.py --checkpoint runs/NAME/checkpoints/best.pt          # then open http://127.0.0.1:7860
    python app.py --checkpoint model_int8.onnx --port 8080            # an export.py file works too

Upload one or several photos (any size, any framing) or take one with the webcam where the browser
allows: each is prepared and segmented exactly as predict.py does it (one implementation), and the
page shows the overlay (wrinkles in red, the regions outlined), the wrinkle area as % of skin and per
region, a threshold slider that starts at the checkpoint's threshold (moving it re-thresholds, the
model does not run again), and the mask PNGs and summary.csv to download. Files without a result
(not an image, unreadable, no face, several faces with face.multiple_faces=skip) are listed with
their reason.

Nothing leaves this machine: the page listens on 127.0.0.1 unless --host says otherwise, Gradio's
analytics are off, no share link is made, and the page uses the system's fonts (no font CDN).
Started without --checkpoint, the page says how to get a model.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import tempfile
from pathlib import Path

from engine.cli import EXIT_OK, InputError, run_cli, setup_logging

NO_MODEL = """### No model loaded

Start the demo with a checkpoint: `python app.py --checkpoint CKPT`. To get one:

- **Train the quickstart** (synthetic faces, a few minutes on a laptop CPU): `bash quickstart.sh`, then
  `python app.py --checkpoint runs/quickstart-*/checkpoints/best.pt`.
- **Import a published model** (Moon et al.'s FFHQ-Wrinkle U-Net or Swin UNETR, the seed blog's U-Net):
  download its weights and run `python -m unet.import_weights moon-unet stage2_unet.pth --output moon_unet.pt`
  (see the README's *Published models*), then `python app.py --checkpoint moon_unet.pt`.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a .pt written by train.py or unet/import_weights.py, or a .onnx from export.py")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--runtime", choices=["torch", "onnx"], help="PyTorch or ONNX Runtime (default: by the file)")
    parser.add_argument("--threads", type=int, help="CPU threads for the model (default: the cores)")
    parser.add_argument("--threshold", default="auto", help="the slider's start: a probability, or 'auto' (the checkpoint's; default)")
    parser.add_argument("--align", choices=["ffhq", "none"], help="override the checkpoint's face.align (as predict.py)")
    parser.add_argument("--skin", choices=["mesh", "bisenet", "none"], help="override the checkpoint's face.skin (as predict.py)")
    parser.add_argument("--bisenet-weights", help="with skin bisenet: path to 79999_iter.pth")
    parser.add_argument("--mesh-models", help="folder of the face-mesh .tflite files")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1-65535, got {args.port}")
    return args


def build_page(segmenter=None, work_dir: Path | None = None):
    """The Gradio page; with `segmenter` None, the page that says how to get a model. Downloads are
    written below `work_dir` (default: the system's temporary folder)."""
    import gradio as gr

    from engine.demo import TABLE_HEADERS, analyse_photos, render
    from engine.errors import WrinkleError

    # Gradio's copies of uploads and results are deleted after an hour (checked hourly).
    with gr.Blocks(title="Wrinkle segmentation", analytics_enabled=False, delete_cache=(3600, 3600)) as page:
        gr.Markdown("# Facial wrinkles\nPhotos are processed on this machine and sent nowhere.")
        if segmenter is None:
            gr.Markdown(NO_MODEL, elem_id="no-model")
            return page
        cfg = segmenter.cfg
        gr.Markdown(
            f"Model: `{cfg.model.arch}` ({cfg.model.input}) at {segmenter.size} px; faces: align `{segmenter.face.align}`, "
            f"skin `{segmenter.face.skin}`.",
            elem_id="model-facts",
        )
        results = gr.State([])
        with gr.Row():
            with gr.Column():
                photos = gr.File(label="Photos", file_count="multiple", type="filepath", elem_id="photos")
                webcam = gr.Image(label="Or the webcam", sources=["webcam"], type="filepath", elem_id="webcam")
                run = gr.Button("Find wrinkles", variant="primary", elem_id="run")
                start = segmenter.threshold  # a validation-chosen threshold may lie outside 0.01-0.99
                threshold = gr.Slider(
                    min(0.01, start),
                    max(0.99, start),
                    value=start,
                    step=0.0001,
                    label="Threshold (wrinkle probability)",
                    elem_id="threshold",
                )
            with gr.Column():
                overlays = gr.Gallery(label="Wrinkles (red) and regions", elem_id="overlays", columns=2, height="auto")
                message = gr.Markdown(elem_id="message")
        table = gr.Dataframe(headers=TABLE_HEADERS, type="array", label="Wrinkle area", interactive=False, elem_id="figures")
        downloads = gr.File(label="Masks and summary.csv", file_count="multiple", interactive=False, elem_id="downloads")

        def show(found, value):
            try:
                shown = render(found, float(value), work_dir)
            except WrinkleError as err:  # e.g. a full disk: the page says it in one line
                raise gr.Error(str(err)) from err
            return shown.overlays, shown.table, shown.downloads, shown.message

        def analyse(files, camera, value):
            paths = [Path(f) for f in files or []] + ([Path(camera)] if camera else [])
            if not paths:
                return [], [], [], [], "Upload a photo (or take one with the webcam) first."
            try:
                found = analyse_photos(segmenter, paths)
            except WrinkleError as err:
                raise gr.Error(str(err)) from err
            return (found, *show(found, value))

        outputs = [overlays, table, downloads, message]
        # One at a time: the model, face cropper and ONNX session are shared by every visitor.
        run.click(analyse, [photos, webcam, threshold], [results, *outputs], concurrency_limit=1, concurrency_id="model")
        threshold.change(show, [results, threshold], outputs, trigger_mode="always_last", concurrency_limit=1, concurrency_id="model")
    return page


def check_port_free(host: str, port: int) -> None:
    """A one-line error naming --port when another program listens there (Gradio's own says GRADIO_SERVER_PORT)."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise InputError(f"--port {port}: cannot listen on {host}:{port} ({err.strerror or err}); choose another port") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: it reads this at import
    import gradio as gr

    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests to itself, one line each
    check_port_free(args.host, args.port)  # before the model loads: a taken port is a one-line error, at once
    segmenter = None
    if args.checkpoint:
        from engine.segment_photos import PhotoSegmenter

        face_overrides = {
            key: value for key in ("align", "skin", "bisenet_weights", "mesh_models") if (value := getattr(args, key)) is not None
        }
        segmenter = PhotoSegmenter(
            args.checkpoint, threshold=args.threshold, face_overrides=face_overrides, runtime=args.runtime, threads=args.threads
        )
    work_dir = tempfile.TemporaryDirectory(prefix="wrinkle-demo-")  # the downloads; removed when the app stops
    page = build_page(segmenter, Path(work_dir.name))
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    print(f"http://{args.host}:{args.port}", flush=True)
    page.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False, theme=theme, footer_links=[], quiet=True)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
