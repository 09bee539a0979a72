"""Faces in photos: detection and face mesh (LiteRT), FFHQ alignment and its inverse, skin and regions."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from face.align import ffhq_affine, invert, transform_points, warp_to_face, warp_to_photo
from face.mesh import ssd_anchors, weighted_nms
from face.regions import LEFT_EYE, LIPS, MOUTH_CORNERS, RIGHT_EYE

# FFHQ's crop for a face whose eye term and mouth term both give the full 1024 frame.
EYES_Y, MOUTH_Y = 512 - 28.444, 512 - 28.444 + 284.444


def template_landmarks(angle_deg: float = 0.0, scale: float = 1.0, shift=(0.0, 0.0)) -> np.ndarray:
    """468 landmarks with only the points FFHQ alignment reads set: eye contours around (384, EYES_Y)
    and (640, EYES_Y), mouth corners at (412, MOUTH_Y) and (612, MOUTH_Y); then turned, scaled and
    moved about the frame centre. Positions are FFHQ's continuous coordinates; returned in pixel-index
    coordinates (a pixel's centre at its index), half a pixel less."""
    points = np.zeros((468, 2))
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 16, endpoint=False)) * 30, np.sin(np.linspace(0, 2 * np.pi, 16, endpoint=False)) * 12], 1)
    points[list(RIGHT_EYE)] = ring + [384, EYES_Y]
    points[list(LEFT_EYE)] = ring + [640, EYES_Y]
    points[MOUTH_CORNERS[0]] = [412, MOUTH_Y]
    points[MOUTH_CORNERS[1]] = [612, MOUTH_Y]
    points -= 0.5
    theta = np.radians(angle_deg)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) * scale
    return (points - 511.5) @ rotation.T + 511.5 + np.asarray(shift)


def test_ffhq_alignment_of_an_aligned_face_is_the_identity():
    matrix = ffhq_affine(template_landmarks(), 1024)
    assert np.allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=2e-3)
    half = ffhq_affine(template_landmarks(), 512)  # the same crop at 512: pixel centres shift by 0.25
    assert np.allclose(half, [[0.5, 0, -0.25], [0, 0.5, -0.25]], atol=2e-3)


def test_crop_scale_enlarges_the_crop_about_its_centre():
    matrix = ffhq_affine(template_landmarks(), 1024, crop_scale=1.25)
    assert np.allclose(matrix[:, :2], np.eye(2) / 1.25, atol=2e-3)
    assert np.allclose(transform_points(np.array([[511.5, 511.5]]), matrix), [[511.5, 511.5]], atol=0.05)


def test_ffhq_alignment_undoes_rotation_scale_and_shift():
    moved = template_landmarks(angle_deg=17, scale=0.6, shift=(-80, 45))
    matrix = ffhq_affine(moved, 1024)
    assert np.allclose(transform_points(moved, matrix), template_landmarks(), atol=0.05)
    assert np.allclose(transform_points(transform_points(moved, matrix), invert(matrix)), moved, atol=1e-6)


def test_mask_survives_align_then_inverse_within_a_pixel():
    rng = np.random.default_rng(3)
    photo_mask = np.zeros((700, 600), np.uint8)
    for _ in range(6):
        cv2.ellipse(photo_mask, (int(rng.integers(200, 400)), int(rng.integers(250, 450))), (int(rng.integers(30, 120)), int(rng.integers(20, 90))),
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
    landmarks = template_landmarks(angle_deg=-12, scale=0.45, shift=(-200, -120))
    for size in (512, 1024):  # the crop is sharper than the photo at 1024, softer at 512
        matrix = ffhq_affine(landmarks, size)
        crop = warp_to_face(photo_mask.astype(np.float32), matrix, size, cv2.BORDER_CONSTANT)
        back = warp_to_photo(crop, matrix, photo_mask.shape) >= 0.5
        changed = back != photo_mask.astype(bool)
        # Only boundary pixels may flip: every changed pixel lies within 1.5 px of the true edge.
        edge_distance = np.minimum(
            cv2.distanceTransform(photo_mask, cv2.DIST_L2, 5), cv2.distanceTransform(1 - photo_mask, cv2.DIST_L2, 5)
        )
        assert changed.sum() < 0.02 * photo_mask.sum()
        assert edge_distance[changed].max(initial=0) <= 1.5


def test_a_thin_strip_of_a_photo_still_warps():
    from face.align import square_affine

    for rows in (5, 40):  # shrinking 20x: the area pre-shrink (13x) must not empty a 5-row strip
        strip = np.full((rows, 4000, 3), 90, np.uint8)
        crop = warp_to_face(strip, square_affine(rows, 4000, 192), 192, cv2.BORDER_CONSTANT)
        assert crop.shape == (192, 192, 3) and crop[-1, 100, 0] == 0
    assert crop[0, 100, 0] == 90  # 40 rows are two crop rows


def test_detector_anchors_and_weighted_nms():
    anchors = ssd_anchors()
    assert anchors.shape == (896, 2) and anchors.min() > 0 and anchors.max() < 1
    assert np.allclose(anchors[:2], [1 / 32, 1 / 32]) and np.allclose(anchors[512:518], 1 / 16)
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.9, 0.9]])
    scores = np.array([0.9, 0.6, 0.7])
    keypoints = np.zeros((3, 6, 2))
    merged = weighted_nms(boxes, scores, keypoints, 0.3)
    assert len(merged) == 2 and merged[0][1] == 0.9
    assert np.allclose(merged[0][0], (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5) and np.allclose(merged[1][0], boxes[2])


# ---------------------------------------------------------------------------------------------
# The real models on real photos.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face_mesh():
    from face.mesh import FaceMesh
    from face.mesh_models import MeshModelsMissing

    try:
        return FaceMesh()
    except MeshModelsMissing as err:
        pytest.skip(str(err))


def real_faces(shared: Path) -> list[Path]:
    return sorted((shared / "photos").iterdir()) + sorted((shared / "ffhq-faces" / "images1024").glob("*.png")) + sorted((shared / "ffhq-faces" / "images256").glob("*.png"))


def test_one_face_per_real_photo_with_a_plausible_skin_mask(face_mesh, shared_data):
    from data.image_io import read_rgb
    from face.regions import region_masks, skin_mask

    for path in real_faces(shared_data):
        image = read_rgb(path)
        faces = face_mesh(image)
        assert len(faces) == 1, path.name
        face = faces[0]
        assert face.detection_score > 0.8 and face.presence_score > 0.9, path.name
        skin = skin_mask(face.landmarks, image.shape[:2])
        x0, y0, x1, y1 = face.box
        assert 0.45 < skin.sum() / ((x1 - x0) * (y1 - y0)) < 1.0, path.name
        box_area = np.zeros_like(skin)
        box_area[int(y0) : int(y1), int(x0) : int(x1)] = True
        assert (skin & box_area).sum() > 0.8 * skin.sum(), path.name  # the skin is the detected face's
        for name, contour in (("right eye", RIGHT_EYE), ("left eye", LEFT_EYE), ("lips", LIPS)):
            x, y = np.round(face.landmarks[list(contour)].mean(0)).astype(int)
            assert not skin[y, x], f"{path.name}: {name} centre is marked as skin"
        x, y = np.round(face.landmarks[1]).astype(int)  # nose tip
        assert skin[y, x], path.name
        regions = {name: mask & skin for name, mask in region_masks(face.landmarks, image.shape[:2]).items()}
        eye_y = face.landmarks[list(RIGHT_EYE) + list(LEFT_EYE)][:, 1].mean()
        for name, mask in regions.items():
            assert mask.sum() > 0.01 * skin.sum(), f"{path.name}: {name} is empty"
        assert np.nonzero(regions["forehead"])[0].mean() < eye_y < np.nonzero(regions["cheeks"])[0].mean(), path.name


def test_aligning_an_ffhq_image_is_close_to_the_identity(face_mesh, shared_data):
    from data.image_io import read_rgb

    scales = []
    for path in sorted((shared_data / "ffhq-faces" / "images1024").glob("*.png")) + sorted((shared_data / "ffhq-faces" / "images256").glob("*.png")):
        image = read_rgb(path)
        side = image.shape[0]
        matrix = ffhq_affine(face_mesh(image)[0].landmarks, side)
        scale = np.sqrt(np.linalg.det(matrix[:, :2]))
        angle = np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0]))
        centre = transform_points(np.array([[side / 2 - 0.5] * 2]), matrix)[0]
        assert abs(angle) < 1.5, f"{path.name}: turned {angle:.2f} degrees"
        assert np.abs(centre - (side / 2 - 0.5)).max() < 0.01 * side, f"{path.name}: centre moved to {centre}"
        # FFHQ's own crops came from dlib's landmarks: the mesh's recipe reproduces some (scale 1.00)
        # and crops most about 1.2x tighter; face.crop_scale (face.calibrate) corrects for that.
        assert 0.95 < scale < 1.3, f"{path.name}: scale {scale:.3f}"
        scales.append(scale)
    assert min(abs(s - 1) for s in scales) < 0.01


def test_mesh_on_the_aligned_crop_agrees_with_the_mapped_landmarks(face_mesh, shared_data):
    """Align a photo, run the mesh again on the crop: the landmarks land where the transform says."""
    from data.image_io import read_rgb

    for name in ("grace_hopper.jpg", "astronaut_eileen_collins.png"):
        image = read_rgb(shared_data / "photos" / name)
        landmarks = face_mesh(image)[0].landmarks
        matrix = ffhq_affine(landmarks, 512)
        crop = warp_to_face(image, matrix, 512)
        again = face_mesh(crop)[0].landmarks
        error = np.linalg.norm(again - transform_points(landmarks, matrix), axis=1)
        interocular = np.linalg.norm(again[list(RIGHT_EYE)].mean(0) - again[list(LEFT_EYE)].mean(0))
        assert np.median(error) < 0.03 * interocular, f"{name}: median landmark shift {np.median(error):.1f} px"


def test_face_crop_maps_skin_back_onto_the_photo(face_mesh, shared_data):
    from config import FaceConfig
    from data.image_io import read_rgb
    from face.crop import FaceCropper

    image = read_rgb(shared_data / "photos" / "grace_hopper.jpg")
    cropper = FaceCropper(FaceConfig(align="ffhq", skin="mesh"), 512)
    crop = cropper(image)
    assert crop.image.shape == (512, 512, 3) and crop.skin.shape == (512, 512) and crop.n_faces == 1
    photo_skin = crop.photo_skin()
    mapped = crop.to_photo(crop.skin.astype(np.uint8), cv2.INTER_NEAREST).astype(bool)
    assert (mapped & photo_skin).sum() / (mapped | photo_skin).sum() > 0.97
    # Disagreement only along the outline, within two photo pixels.
    outline_distance = np.minimum(
        cv2.distanceTransform(photo_skin.astype(np.uint8), cv2.DIST_L2, 5), cv2.distanceTransform((~photo_skin).astype(np.uint8), cv2.DIST_L2, 5)
    )
    assert outline_distance[mapped != photo_skin].max() <= 2.0
    # A spot drawn at the nose tip in the crop lands on the photo's nose tip.
    spot = np.zeros((512, 512), np.float32)
    nose = transform_points(crop.landmarks[1:2], crop.matrix)[0]
    cv2.circle(spot, tuple(int(v) for v in np.round(nose * 16)), 6 * 16, 1.0, -1, shift=4)
    on_photo = crop.to_photo(spot)
    ys, xs = np.nonzero(on_photo > 0.5)
    assert np.hypot(xs.mean() - crop.landmarks[1, 0], ys.mean() - crop.landmarks[1, 1]) < 1.0


def test_no_face_and_several_faces_follow_the_rule(face_mesh, shared_data):
    from config import FaceConfig
    from data.image_io import read_rgb
    from face.crop import FaceCropper, FaceNotUsable

    blank = np.full((300, 400, 3), 128, np.uint8)
    with pytest.raises(FaceNotUsable) as info:
        FaceCropper(FaceConfig(), 256)(blank)
    assert info.value.status == "no_face"
    face = read_rgb(shared_data / "photos" / "grace_hopper.jpg")
    small = cv2.resize(face, (358, 420), interpolation=cv2.INTER_AREA)
    pair = np.zeros((600, 870, 3), np.uint8)
    pair[:, :512] = face  # the larger face
    pair[90:510, 512:] = small
    assert len(face_mesh(pair)) == 2
    crop = FaceCropper(FaceConfig(multiple_faces="largest"), 256)(pair)
    assert crop.n_faces == 2 and crop.landmarks[:, 0].max() < 512  # the larger, left face
    with pytest.raises(FaceNotUsable) as info:
        FaceCropper(FaceConfig(multiple_faces="skip"), 256)(pair)
    assert info.value.status == "multiple_faces" and info.value.n_faces == 2


def test_models_come_out_of_a_wheel_with_checked_hashes(tmp_path, monkeypatch):
    import zipfile

    from face import mesh_models
    from face.mesh_models import MODEL_FILES, MeshModelsMissing, extract_from_wheel, find_models

    monkeypatch.setattr(mesh_models, "_installed_mediapipe_dir", lambda: None)
    with pytest.raises(MeshModelsMissing, match="python -m face.mesh_models"):
        find_models(tmp_path / "nowhere")
    wheel = tmp_path / "mediapipe-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, (sub, _) in MODEL_FILES.items():
            archive.writestr(sub + name, b"not the model")
    with pytest.raises(ValueError, match="SHA-256"):
        extract_from_wheel(wheel, tmp_path / "models")
    assert not any((tmp_path / "models").iterdir())  # nothing half-written



def test_bisenet_skin_on_an_aligned_crop_maps_back(face_mesh, shared_data, tmp_path):
    """face.skin bisenet: BiSeNet (random weights, published key names) parses the aligned crop; the
    skin stays inside the photo's footprint in the crop and comes back at the photo's size."""
    import torch

    from config import FaceConfig
    from data.image_io import read_rgb
    from face.align import photo_outline
    from face.bisenet import BiSeNet
    from face.crop import FaceCropper

    torch.manual_seed(0)
    torch.save(BiSeNet().state_dict(), tmp_path / "79999_iter.pth")
    image = read_rgb(shared_data / "photos" / "grace_hopper.jpg")
    cropper = FaceCropper(FaceConfig(align="ffhq", skin="bisenet", bisenet_weights=str(tmp_path / "79999_iter.pth"), skin_classes=list(range(19))), 256)
    crop = cropper(image)
    inside = photo_outline(*image.shape[:2], crop.matrix, 256)
    assert crop.skin.shape == (256, 256) and (crop.skin == inside).all()  # every class is skin here
    photo_skin = crop.photo_skin()
    assert photo_skin.shape == image.shape[:2] and 0 < photo_skin.mean() < 1  # the crop's footprint only


def test_calibrated_crop_scale_reproduces_the_ffhq_framing(face_mesh, shared_data):
    from face.calibrate import realignment_scales

    paths = sorted((shared_data / "ffhq-faces" / "images1024").glob("*.png"))
    scales = realignment_scales(paths, face_mesh)
    assert len(scales) == len(paths)
    crop_scale = float(np.median(list(scales.values())))
    assert 1.1 < crop_scale < 1.3
    # With the calibrated scale, a face near the median comes out of FaceCropper as FFHQ framed it.
    from config import FaceConfig
    from data.image_io import read_rgb
    from face.crop import FaceCropper

    name = min(scales, key=lambda n: abs(scales[n] - crop_scale))
    image = read_rgb(shared_data / "ffhq-faces" / "images1024" / name)
    ffhq_framed = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA).astype(np.float32)
    for scale, limit in ((crop_scale, 6.0), (1.0, None)):
        crop = FaceCropper(FaceConfig(crop_scale=scale), 256)(image).image.astype(np.float32)
        difference = np.abs(crop - ffhq_framed).mean()
        if limit is not None:
            assert difference < limit, f"{name}: mean difference {difference:.1f} with crop_scale {scale:.3f}"
            calibrated = difference
    assert difference > 2 * calibrated  # the uncalibrated crop is visibly zoomed in

@pytest.mark.parametrize("degrees", [30, -30, 180])
def test_turned_photos_give_the_same_landmarks_and_an_upright_crop(face_mesh, shared_data, degrees):
    """A photo turned about its centre (canvas enlarged): the mesh follows the face, and the aligned
    crop matches the one from the upright photo."""
    from data.image_io import read_rgb

    image = read_rgb(shared_data / "photos" / "grace_hopper.jpg")
    height, width = image.shape[:2]
    turn = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), degrees, 1.0)
    canvas = int(np.ceil(np.hypot(height, width)))
    turn[:, 2] += [(canvas - width) / 2, (canvas - height) / 2]
    turned = cv2.warpAffine(image, turn, (canvas, canvas), flags=cv2.INTER_LINEAR)
    upright = face_mesh(image)[0].landmarks
    found = face_mesh(turned)
    assert len(found) == 1
    back = transform_points(found[0].landmarks, invert(turn))
    interocular = np.linalg.norm(upright[list(RIGHT_EYE)].mean(0) - upright[list(LEFT_EYE)].mean(0))
    assert np.median(np.linalg.norm(back - upright, axis=1)) < 0.05 * interocular
    # The crop of the turned photo puts the eyes and mouth where the upright photo's crop does.
    upright_crop = transform_points(upright, ffhq_affine(upright, 256))
    turned_crop = transform_points(found[0].landmarks, ffhq_affine(found[0].landmarks, 256))
    for points in (list(RIGHT_EYE), list(LEFT_EYE), list(MOUTH_CORNERS)):
        assert np.linalg.norm(turned_crop[points].mean(0) - upright_crop[points].mean(0)) < 4, degrees
