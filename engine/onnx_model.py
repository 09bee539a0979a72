"""ONNX models of checkpoints: export (fp32, or int8 calibrated on faces), metadata, and running them
with ONNX Runtime.

An exported file is self-contained: one graph, `image` (float32 N x C x H x W in [0, 1], any N, H and W;
the network pads inside, as in PyTorch) -> `wrinkle_prob` (N x 1 x H x W), and the checkpoint's resolved
config, validation threshold and provenance as ONNX metadata, so predict.py and evaluate.py prepare
faces from the `.onnx` file alone exactly as from the checkpoint. The config's facts that other tools
need (resolution, input channels, face settings, threshold) are also stored under their own keys.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from config import Config, ConfigError, config_from_dict, config_to_dict
from engine.checkpoint import CheckpointError
from engine.fileio import atomic_write, file_digest

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "wrinkle_prob"
FORMAT = "wrinkle-segmentation-onnx/1"
KEY = "wrinkle_segmentation."  # metadata key prefix
OPSET = 18


class ExportError(CheckpointError):
    """A checkpoint whose network the ONNX exporter cannot convert."""


class WrinkleProbability(nn.Module):
    """The exported graph: a segmentation network's logits through a sigmoid."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(image))


def onnx_metadata(cfg: Config, threshold: float | None, epoch: int | None, source: str, precision: str) -> dict[str, str]:
    """The metadata export.py writes: the resolved config (what loading reads) and its facts, as strings."""
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1):
        raise CheckpointError(f"{source}: its stored threshold {threshold!r} is not a probability in (0, 1)")
    return {
        KEY + "format": FORMAT,
        KEY + "config": json.dumps(config_to_dict(cfg), sort_keys=True),
        KEY + "threshold": "" if threshold is None else repr(threshold),
        KEY + "epoch": "" if epoch is None else str(epoch),
        KEY + "source": source,
        KEY + "precision": precision,
        KEY + "arch": cfg.model.arch,
        KEY + "image_size": str(cfg.data.image_size),
        KEY + "input_channels": str(4 if cfg.model.input == "rgb_texture" else 3),
        KEY
        + "input": f"{INPUT_NAME}: float32 N x C x H x W, RGB{' + texture map / 255' if cfg.model.input == 'rgb_texture' else ''} in [0, 1]",
        KEY + "zero_non_skin": str(cfg.data.zero_non_skin).lower(),
        KEY + "face": json.dumps(config_to_dict(cfg)["face"], sort_keys=True),
    }


def export_checkpoint(
    model: nn.Module,
    cfg: Config,
    output: str | Path,
    threshold: float | None,
    epoch: int | None,
    source: str,
    calibration: list[np.ndarray] | None = None,
) -> Path:
    """Write `model` (eval mode, CPU) as ONNX to `output`, atomically: fp32, or with `calibration` (float32
    1 x C x H x W inputs as prediction feeds them) int8 QDQ with per-channel weights."""
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="export-") as scratch:
        fp32 = Path(scratch) / "fp32.onnx"
        trace_onnx(model, fp32, 4 if cfg.model.input == "rgb_texture" else 3)
        graph = fp32
        if calibration is not None:
            graph = Path(scratch) / "int8.onnx"
            quantize_int8(fp32, graph, calibration, Path(scratch))
        precision = "fp32" if calibration is None else f"int8 (calibrated on {len(calibration)} faces at {calibration[0].shape[-1]} px)"
        write_with_metadata(graph, output, onnx_metadata(cfg, threshold, epoch, source, precision))
    return output


def trace_onnx(model: nn.Module, path: Path, in_channels: int) -> None:
    """torch.export -> ONNX with dynamic batch, height and width (traced on 2 x C x 72 x 56: a batch of 1 or
    a size that needs no padding would be specialized)."""
    import onnx  # noqa: F401 -- the exporter needs it; imported here so a missing package fails before tracing

    wrapped = WrinkleProbability(model).eval()
    example = torch.rand(2, in_channels, 72, 56)
    dynamic = torch.export.Dim.DYNAMIC
    with torch.no_grad(), _quiet_loggers("onnxscript", "onnx_ir", "torch.onnx"):
        torch.onnx.export(
            wrapped,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"image": {0: dynamic, 2: dynamic, 3: dynamic}},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """The exporter's graph optimizer logs every rewrite at INFO: only its warnings are the user's business."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over a list of inputs."""

    def __init__(self, inputs: Iterable[np.ndarray]):
        self._inputs: Iterator[np.ndarray] = iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._inputs, None)
        return None if item is None else {INPUT_NAME: item}


def quantize_int8(fp32: Path, output: Path, calibration: list[np.ndarray], scratch: Path) -> None:
    """Static int8 quantization: QDQ format, per-channel int8 weights, uint8 activations whose ranges
    are the min and max seen on `calibration`. ONNX Runtime's pre-processing (shape inference, graph
    optimization) first, as its documentation asks."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = scratch / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(output),
        _Calibration(calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


def write_with_metadata(graph: Path, output: Path, metadata: dict[str, str]) -> None:
    """Copy the ONNX file `graph` to `output` (atomically) with `metadata` added, after onnx's checker."""
    import onnx

    proto = onnx.load(str(graph))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "wrinkle-segmentation export.py"
    onnx.checker.check_model(proto)
    with atomic_write(output, "wb", fsync=True) as handle:
        handle.write(proto.SerializeToString())


def source_label(path: str | Path) -> str:
    """`name sha256:<hex>` of the checkpoint an export came from."""
    path = Path(path)
    return f"{path.name} sha256:{file_digest(path, 'sha256')}"


def onnx_runtime_errors() -> tuple[type[Exception], ...]:
    """The exceptions ONNX Runtime raises for a file it cannot use (bad protobuf, bad graph, failed init)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    return (ort_state.Fail, ort_state.InvalidArgument, ort_state.InvalidGraph, ort_state.InvalidProtobuf, ort_state.NoSuchFile)


class OnnxNetwork:
    """An exported model in an ONNX Runtime session: float N x C x H x W in [0, 1] (a torch tensor on any
    device) -> N x H x W wrinkle probabilities on the same device. CUDA's provider when `device` is CUDA
    (and ONNX Runtime has it), else the CPU's, with `threads` intra-op threads."""

    def __init__(self, model_bytes: bytes, label: str, device: torch.device, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3  # warnings about unused initializers etc. are not the user's business
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                log.warning("this ONNX Runtime build has no CUDA provider (pip install onnxruntime-gpu): running on the CPU")
            else:
                providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(model_bytes, options, providers=providers)
        except onnx_runtime_errors() as err:
            raise CheckpointError(f"{label}: ONNX Runtime cannot load it: {_first_line(err)}") from None
        self.device = device
        self.providers = self.session.get_providers()
        if providers[0] not in self.providers:  # ONNX Runtime falls back to the CPU quietly (e.g. a cuDNN it cannot load)
            log.warning("%s: ONNX Runtime could not start %s; running on %s", label, providers[0], ", ".join(self.providers))
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME] or len(inputs[0].shape) != 4:
            raise CheckpointError(
                f"{label}: not a wrinkle model exported by export.py (inputs {[i.name for i in inputs]}, outputs "
                f"{[o.name for o in outputs]}; expected {INPUT_NAME} N x C x H x W -> {OUTPUT_NAME})"
            )
        self.in_channels = inputs[0].shape[1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"this ONNX model takes N x {self.in_channels} x H x W input, not {tuple(x.shape)}")
        (prob,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x.detach().float().contiguous().cpu().numpy()})
        return torch.from_numpy(prob[:, 0]).to(x.device)


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message, without terminal colour codes, for a one-line error."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def read_onnx(path: str | Path) -> tuple[bytes, Config, dict[str, Any]]:
    """An export.py file's bytes, config and facts (threshold, epoch, precision, source). Anything else (a
    missing or truncated file, another program's model, missing metadata) is a one-line CheckpointError."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX model not found: {path}")
    data = path.read_bytes()
    if not data:
        raise CheckpointError(f"{path}: the file is empty (0 bytes)")
    try:
        proto = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError) as err:  # protobuf raises DecodeError; onnx RuntimeError
        raise CheckpointError(
            f"{path}: not a readable ONNX model ({len(data)} bytes, truncated or another format): {_first_line(err)}"
        ) from None
    metadata = {p.key: p.value for p in proto.metadata_props}
    if metadata.get(KEY + "format") != FORMAT or KEY + "config" not in metadata:
        found = metadata.get(KEY + "format")
        raise CheckpointError(
            f"{path}: no wrinkle-segmentation metadata ({'format ' + found if found else 'none'}; expected {FORMAT}): "
            "not written by this project's export.py; export a checkpoint with `python export.py --checkpoint CKPT --output FILE.onnx`"
        )
    if not proto.graph.node:
        raise CheckpointError(f"{path}: the ONNX file holds no graph (truncated?)")
    try:
        cfg = config_from_dict(json.loads(metadata[KEY + "config"]))
    except (json.JSONDecodeError, ConfigError) as err:
        raise CheckpointError(f"{path}: its stored config does not fit this version's schema: {_first_line(err)}") from None
    facts: dict[str, Any] = {
        "threshold": float(metadata[KEY + "threshold"]) if metadata.get(KEY + "threshold") else None,
        "epoch": int(metadata[KEY + "epoch"]) if metadata.get(KEY + "epoch") else None,
        "precision": metadata.get(KEY + "precision", "fp32"),
        "source": metadata.get(KEY + "source", ""),
    }
    return data, cfg, facts


def export_file(
    checkpoint: str | Path,
    output: str | Path,
    calibration_dir: str | Path | None = None,
    calibration_limit: int = 64,
    face_mask_dir: str | Path | None = None,
    face_overrides: dict[str, str] | None = None,
    overwrite: bool = False,
    calibration_size: int | None = None,
    recursive: bool = False,
) -> Path:
    """export.py: `checkpoint` to `output` (fp32, or int8 calibrated on `calibration_dir`'s faces, cropped
    at `calibration_size`, by default the training resolution). An existing `output` is replaced only
    with `overwrite`, and only when export.py wrote it."""
    from engine.errors import OutputError
    from engine.inference import load_model
    from engine.segment_photos import calibration_inputs

    output = Path(output)
    if output.exists():
        if not overwrite:
            raise OutputError(f"{output} exists; pass --overwrite to replace it")
        try:
            read_onnx(output)
        except CheckpointError:
            raise OutputError(f"{output} exists and was not written by export.py; it is left alone (choose another --output)") from None
    model, cfg, state = load_model(checkpoint, torch.device("cpu"))
    calibration = None
    if calibration_dir is not None:
        calibration = calibration_inputs(
            cfg, calibration_dir, face_mask_dir, face_overrides, calibration_limit, calibration_size, recursive
        )
        if not calibration:
            raise ConfigError(f"--calibration {calibration_dir}: no usable face (see the warnings above); int8 needs at least one")
    log.info(
        "exporting %s (%s) to %s%s",
        checkpoint,
        cfg.model.arch,
        output,
        " with int8 weights and activations" if calibration is not None else "",
    )
    try:
        return export_checkpoint(model, cfg, output, state.get("threshold"), state.get("epoch"), source_label(checkpoint), calibration)
    except torch.onnx.OnnxExporterError as err:
        # The exporter's own message is a multi-line guide in colour; the reason is the error it wraps.
        reason = _first_line(err.__cause__ or err)
        raise ExportError(f"{checkpoint}: {cfg.model.arch} does not export to ONNX: {reason}") from err
