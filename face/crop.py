"""From a photo to the model's input: find the face, align it, mask its skin; and back again.

One `FaceCropper`, configured by the checkpoint's `face` section, serves predict.py and
face_parsing_extraction.py, so photos are prepared exactly as the training faces were.
Rule for photos with several faces: the largest face (`face.multiple_faces: largest`) or none
(`skip`, status "multiple_faces"); a photo with no face gets status "no_face".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from config import ConfigError
from data.decode import pad_to_square
from data.image_io import resize_mask, resize_rgb
from face.align import ffhq_affine, photo_outline, square_affine, transform_points, warp_to_face, warp_to_photo
from face.regions import region_masks, skin_mask, visible_shares

MIN_VISIBLE_SHARE = 0.5  # a region mostly beyond the photo's frame gets no figure


class FaceNotUsable(ValueError):
    """A photo the face rule rejects; `status` goes into summary.csv."""

    def __init__(self, status: str, message: str, n_faces: int):
        super().__init__(message)
        self.status, self.n_faces = status, n_faces


@dataclass
class FaceCrop:
    """A photo's face in the training frame, and how to map results back onto the photo."""

    image: np.ndarray  # size x size RGB, not masked
    skin: np.ndarray  # size x size bool: skin pixels that come from inside the photo
    matrix: np.ndarray  # 2x3, photo pixels -> crop pixels
    photo_shape: tuple[int, int]  # (height, width)
    landmarks: np.ndarray | None = None  # (468, 2) in photo pixels, when a face mesh ran
    n_faces: int = 0
    skin_from_mesh: bool = False
    photo_skin_mask: np.ndarray | None = field(default=None, repr=False)  # at the photo's size; made on first use unless given

    def to_photo(self, array: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Map a crop-frame array (probabilities, a mask) back onto the photo; 0 outside the crop."""
        return warp_to_photo(array, self.matrix, self.photo_shape, interpolation)

    def photo_skin(self) -> np.ndarray:
        """The skin mask at the photo's size: drawn from the landmarks when the mesh made it (exact
        at any photo size), else the crop's mask mapped back."""
        if self.photo_skin_mask is None:
            if self.skin_from_mesh:
                self.photo_skin_mask = skin_mask(self.landmarks, self.photo_shape)
            else:
                self.photo_skin_mask = self.to_photo(self.skin.astype(np.uint8), cv2.INTER_NEAREST).astype(bool)
        return self.photo_skin_mask

    def photo_regions(self) -> dict[str, np.ndarray]:
        """Facial regions (forehead, glabella, periorbital, cheeks) on the photo's skin; a region
        less than MIN_VISIBLE_SHARE inside the photo is left out; none without landmarks."""
        if self.landmarks is None:
            return {}
        skin = self.photo_skin()
        masks = region_masks(self.landmarks, self.photo_shape)
        shares = visible_shares(self.landmarks, self.photo_shape, masks)
        return {name: mask & skin for name, mask in masks.items() if shares[name] >= MIN_VISIBLE_SHARE}


class FaceCropper:
    """Photo -> `FaceCrop`, per a `face` config section (align, skin, multiple_faces, ...)."""

    def __init__(self, face_cfg, size: int, device: str = "cpu"):
        self.cfg, self.size = face_cfg, size
        self.mesh = None
        if face_cfg.align == "ffhq" or face_cfg.skin == "mesh":
            from face.mesh import FaceMesh

            self.mesh = FaceMesh(face_cfg.mesh_models or None, face_cfg.min_score)
        self.parser = None
        if face_cfg.skin == "bisenet":
            from face.bisenet import load_bisenet

            if not face_cfg.bisenet_weights:
                raise ConfigError("face.bisenet_weights: skin bisenet needs the path of 79999_iter.pth (face-parsing.PyTorch)")
            self.parser = load_bisenet(face_cfg.bisenet_weights, device)

    def __call__(self, image: np.ndarray) -> FaceCrop:
        """The photo's face crop; raises `FaceNotUsable` for no face or (with `skip`) several."""
        height, width = image.shape[:2]
        landmarks, n_faces = None, 0
        if self.mesh is not None:
            faces = self.mesh(image)
            n_faces = len(faces)
            if not faces:
                raise FaceNotUsable("no_face", "no face found", 0)
            if n_faces > 1 and self.cfg.multiple_faces == "skip":
                raise FaceNotUsable("multiple_faces", f"{n_faces} faces found; face.multiple_faces is skip", n_faces)
            landmarks = faces[0].landmarks  # largest first
        if self.cfg.align == "ffhq":
            matrix = ffhq_affine(landmarks, self.size, self.cfg.crop_scale)
            crop = warp_to_face(image, matrix, self.size, cv2.BORDER_REFLECT_101)  # FFHQ pads by reflection
        else:
            matrix = square_affine(height, width, self.size)
            crop = warp_to_face(image, matrix, self.size, cv2.BORDER_CONSTANT)
        inside = photo_outline(height, width, matrix, self.size)
        if self.cfg.skin == "mesh":
            skin = skin_mask(transform_points(landmarks, matrix), (self.size, self.size)) & inside
        elif self.cfg.skin == "bisenet":
            from face.bisenet import parse_face
            from face.bisenet import skin_mask as parsed_skin

            skin = parsed_skin(parse_face(self.parser, crop), tuple(self.cfg.skin_classes)) & inside
        else:
            skin = inside
        return FaceCrop(crop, skin, matrix, (height, width), landmarks, n_faces, self.cfg.skin == "mesh")


def load_mask_crop(image: np.ndarray, skin: np.ndarray, size: int) -> FaceCrop:
    """A crop for a photo whose skin mask is given (face_parsing_extraction.py output, or any
    mask file): padded to a square and scaled, no face detection, pixel for pixel as training
    samples are made (data.decode.load_sample); `square_affine` maps the result back."""
    height, width = image.shape[:2]
    crop = resize_rgb(pad_to_square(image), size, size)
    crop_skin = resize_mask(pad_to_square(skin.astype(bool)), size, size, thin=False)
    return FaceCrop(crop, crop_skin, square_affine(height, width, size), (height, width), photo_skin_mask=skin)
