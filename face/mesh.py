"""Face detection (BlazeFace short range) and the 468-point face mesh, run with LiteRT.

The two MediaPipe models (see `face.mesh_models`) are run directly, with the pre- and
post-processing of MediaPipe's face_mesh graph written here: SSD anchors and weighted non-maximum
suppression for the detector, a rotated square region of interest for the mesh, and a second mesh
pass on the region the first pass found (MediaPipe's tracking step, which tightens the landmarks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from engine.errors import WrinkleError
from face.mesh_models import MeshModelsCorrupt, default_dir, find_models, refetch_help

if TYPE_CHECKING:
    from ai_edge_litert.interpreter import Interpreter

DETECTOR_SIZE = 128
MESH_SIZE = 192
ROI_SCALE = 1.5  # the mesh sees the face box enlarged 1.5x, as in MediaPipe
NMS_IOU = 0.3
TURNED_MIN_SCORE = 0.75  # a face found only on a turned photo needs this score: turned passes see more false faces
RIGHT_EYE_CORNER, LEFT_EYE_CORNER = 33, 263  # outer eye corners (subject's right eye is on the image's left)


class LiteRTMissing(WrinkleError, RuntimeError):
    """The LiteRT runtime (package ai-edge-litert) is not installed."""


@dataclass
class Face:
    """One face in a photo: its detection box (x0, y0, x1, y1 in pixels), scores and landmarks."""

    box: np.ndarray
    detection_score: float
    presence_score: float  # the mesh model's face-presence probability
    landmarks: np.ndarray  # (468, 2) float32, x, y in photo pixels

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


def ssd_anchors() -> np.ndarray:
    """The detector's 896 anchor centres (x, y in 0..1): 2 per cell on the 16x16 grid (stride 8),
    6 per cell on the 8x8 grid (three stride-16 layers of 2)."""
    anchors = []
    for grid, per_cell in ((16, 2), (8, 6)):
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        centres = np.stack([(xs.ravel() + 0.5) / grid, (ys.ravel() + 0.5) / grid], 1)
        anchors.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(anchors).astype(np.float32)


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou_limit: float
) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe's weighted NMS: overlapping detections are averaged, weighted by score."""
    order = np.argsort(-scores)
    results = []
    while order.size:
        top = boxes[order[0]]
        x0 = np.maximum(top[0], boxes[order, 0])
        y0 = np.maximum(top[1], boxes[order, 1])
        x1 = np.minimum(top[2], boxes[order, 2])
        y1 = np.minimum(top[3], boxes[order, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        areas = (boxes[order, 2] - boxes[order, 0]) * (boxes[order, 3] - boxes[order, 1])
        iou = inter / np.maximum(areas + (top[2] - top[0]) * (top[3] - top[1]) - inter, 1e-9)
        group, order = order[iou > iou_limit], order[iou <= iou_limit]
        weights = scores[group] / scores[group].sum()
        results.append((weights @ boxes[group], float(scores[group[0]]), np.tensordot(weights, keypoints[group], 1)))
    return results


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def roi_transform(centre: np.ndarray, size: float, angle: float, out_size: int) -> np.ndarray:
    """2x3 affine from a rotated square region's pixels (out_size x out_size) to photo pixels, both
    in pixel-index coordinates (a pixel's centre at its index): crop index (out_size - 1) / 2 is
    the region's centre."""
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]]) * (size / out_size)
    offset = np.asarray(centre) - rotation @ np.full(2, (out_size - 1) / 2)
    return np.hstack([rotation, offset[:, None]]).astype(np.float64)


class FaceMesh:
    """Faces and their 468 landmarks in an RGB photo, on the CPU, in a few milliseconds per face."""

    def __init__(self, model_dir: str | Path | None = None, min_score: float = 0.5, num_threads: int = 1):
        try:
            from ai_edge_litert.interpreter import Interpreter  # imported here: only this backend needs it
        except ImportError as err:
            raise LiteRTMissing(
                f"the face mesh runs with LiteRT, which cannot be imported ({err}): pip install -r requirements.txt (ai-edge-litert)"
            ) from None

        paths = find_models(model_dir)  # checks the SHA-256 of the project's copies
        way_out = refetch_help(Path(model_dir) if model_dir else default_dir())  # the folder looked in first
        self.detector = self._interpreter(Interpreter, paths["face_detection_short_range.tflite"], num_threads, way_out)
        self.mesh = self._interpreter(Interpreter, paths["face_landmark.tflite"], num_threads, way_out)
        self.min_score = min_score
        self.anchors = ssd_anchors()

    @staticmethod
    def _interpreter(interpreter_class: type[Interpreter], path: Path, num_threads: int, way_out: str) -> Interpreter:
        """A LiteRT interpreter for one model file, its tensors allocated; a file LiteRT cannot read
        (e.g. an unchecked copy inside a mediapipe package) is a one-line `MeshModelsCorrupt`."""
        try:
            interpreter = interpreter_class(model_path=str(path), num_threads=num_threads)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:  # what LiteRT raises for a file it cannot parse
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise MeshModelsCorrupt(f"{path}: not a usable TFLite model ({reason}); {way_out}") from None
        return interpreter

    @staticmethod
    def _run(interpreter, tensor: np.ndarray) -> list[np.ndarray]:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor[None].astype(np.float32))
        interpreter.invoke()
        return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]

    def _detect_square(self, tensor: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """Detections on one 128 x 128 input, in its normalized coordinates (0..1)."""
        outputs = {o.shape[-1]: o[0] for o in self._run(self.detector, tensor)}
        raw, logits = outputs[16], outputs[1][:, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100, 100)))  # MediaPipe clips at 100
        keep = scores >= self.min_score
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep] / DETECTOR_SIZE, scores[keep], self.anchors[keep]
        centres = anchors + raw[:, :2]
        boxes = np.concatenate([centres - raw[:, 2:4] / 2, centres + raw[:, 2:4] / 2], 1)
        keypoints = anchors[:, None, :] + raw[:, 4:].reshape(-1, 6, 2)
        return weighted_nms(boxes, scores, keypoints, NMS_IOU)

    def detect(self, image: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """Face boxes (x0, y0, x1, y1), scores and 6 keypoints (eyes, nose, mouth, ears) in pixels.

        BlazeFace is trained on faces within about 45 degrees of upright; shown an upside-down face
        it reports an upright one with the eyes on the mouth. So it runs on the photo turned by 0,
        90, 180 and 270 degrees (four runs of about 1.5 ms), and where detections of several turns
        overlap, the best-scoring turn wins. The turned passes also see faces in clothing and
        chins, so their detections count only from TURNED_MIN_SCORE (real faces at their own turn
        score 0.8-0.95; those false ones about 0.5-0.7).
        """
        height, width = image.shape[:2]
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        square = cv2.copyMakeBorder(image, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT, value=0)
        tensor = cv2.resize(square, (DETECTOR_SIZE, DETECTOR_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1.0
        found = []
        for turns in range(4):
            for box, score, points in self._detect_square(np.ascontiguousarray(np.rot90(tensor, turns))):
                if turns and score < TURNED_MIN_SCORE:
                    continue
                corners = box[[0, 1, 2, 1, 2, 3, 0, 3]].reshape(4, 2)
                for _ in range(turns):  # back through each quarter turn: rot90 maps (x, y) to (y, 1 - x)
                    corners, points = np.stack([1 - corners[:, 1], corners[:, 0]], 1), np.stack([1 - points[:, 1], points[:, 0]], 1)
                found.append((np.concatenate([corners.min(0), corners.max(0)]), score, points))
        kept: list[tuple[np.ndarray, float, np.ndarray]] = []
        for box, score, points in sorted(found, key=lambda f: -f[1]):
            if all(box_iou(box, other[0]) <= NMS_IOU for other in kept):
                kept.append((box, score, points))
        shift = np.array([left, top], np.float32) + 0.5  # letterbox, and continuous -> pixel-index coordinates
        return [((box.reshape(2, 2) * side - shift).ravel(), score, points * side - shift) for box, score, points in kept]

    def landmarks(self, image: np.ndarray, centre: np.ndarray, size: float, angle: float) -> tuple[np.ndarray, float]:
        """The 468 landmarks (photo pixels) and face-presence score in a rotated square region."""
        to_photo = roi_transform(centre, size, angle, MESH_SIZE)
        crop = cv2.warpAffine(
            image, to_photo, (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT
        )
        outputs = {o.size: o for o in self._run(self.mesh, crop.astype(np.float32) / 255.0)}
        points = outputs[468 * 3].reshape(468, 3)[:, :2] - 0.5  # the model's continuous coordinates -> pixel index
        presence = float(1.0 / (1.0 + np.exp(-outputs[1].item())))
        return (points @ to_photo[:, :2].T + to_photo[:, 2]).astype(np.float32), presence

    @staticmethod
    def roi_from_points(points: np.ndarray, right_eye: np.ndarray, left_eye: np.ndarray) -> tuple[np.ndarray, float, float]:
        """A square region around `points`, turned so the eyes lie level, enlarged by ROI_SCALE."""
        delta = left_eye - right_eye
        angle = float(np.arctan2(delta[1], delta[0]))
        cos, sin = np.cos(angle), np.sin(angle)
        upright = (points - points.mean(0)) @ np.array([[cos, -sin], [sin, cos]])  # rotate by -angle
        low, high = upright.min(0), upright.max(0)
        centre_upright = (low + high) / 2
        centre = points.mean(0) + np.array([[cos, -sin], [sin, cos]]) @ centre_upright
        return centre, float((high - low).max() * ROI_SCALE), angle

    def __call__(self, image: np.ndarray) -> list[Face]:
        """Every face found in an RGB uint8 photo, largest first; faces whose mesh presence score is
        below `min_score` are dropped."""
        faces = []
        for box, score, keypoints in self.detect(image):
            delta = keypoints[1] - keypoints[0]  # right eye -> left eye
            centre, size = (box[:2] + box[2:]) / 2, float((box[2:] - box[:2]).max() * ROI_SCALE)
            angle = float(np.arctan2(delta[1], delta[0]))
            points, presence = self.landmarks(image, centre, size, angle)
            # Second pass on the region the mesh itself spans (MediaPipe's tracking step).
            centre, size, angle = self.roi_from_points(points, points[RIGHT_EYE_CORNER], points[LEFT_EYE_CORNER])
            points, presence = self.landmarks(image, centre, size, angle)
            if presence >= self.min_score:
                faces.append(Face(box, score, presence, points))
        return sorted(faces, key=lambda f: -f.area)
