"""Instances found on OCR-D's derived page image, moved into the pixels of the page itself.

OCR-D hands a processor the page image as the workflow has prepared it so far: cropped to the page's
`Border`, rotated by its `@orientation` (deskewed), together with the affine transform from page pixels to
the derived image's pixels (`Workspace.image_from_page`). PAGE coordinates always refer to the original
page image. Transforming the finished polygons (`ocrd_utils.coordinates_for_segment`) would rotate and
round them, so they could lose the validity `docsam_cli.polygons` gives them and text lines could leave
their regions. The masks are moved instead (nearest-neighbour resampling through the same transform), and
the polygons are then traced on the page by the code behind `docsam segment --format page`. Masks are cut
to the page and, where the page has a `Border`, to its polygon, and the outlines traced from them to the
Border's polygon too (`PageShapes.within`), so every region lies inside both.

A page whose `@orientation` (or deskewing) turns it by about 90°, 180° or 270° is laid out in its
`ReadingFrame`: the page turned by those quarter turns, in which its text runs as on the derived image.
Reading order (XY-cut) and baselines (left to right along the bottom of a line) are only right there. The
masks go to that frame, the PAGE content is written there, and its points come back to the page by the
inverse quarter turns, which are exact on integer points: polygons stay valid, lines inside their regions.
What is left of the turn (a deskewing angle within 45°) is undone for ordering only: regions and lines are
ordered on the derived image, where the text runs level (`layout.page_layout`'s `upright`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.instances import PageInstances


@dataclass(frozen=True)
class ReadingFrame:
    """The page turned by `quarter_turns` right angles, in the sense OCR-D's transform turns it: pixel
    (x, y) of a W x H page is (H-1-y, x) in the frame after one turn, (W-1-x, H-1-y) after two, (y, W-1-x)
    after three."""

    quarter_turns: int
    page_size: tuple[int, int]  # (width, height) of the page

    @classmethod
    def of(cls, transform: np.ndarray, page_size: tuple[int, int]) -> ReadingFrame:
        """The frame nearest to the derived image: the right angle closest to the transform's rotation."""
        linear = np.asarray(transform, dtype=np.float64)[:2, :2]
        angle = np.degrees(np.arctan2(linear[1, 0], linear[0, 0]))
        return cls(int(np.rint(angle / 90)) % 4, page_size)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frame."""
        width, height = self.page_size
        return (width, height) if self.quarter_turns % 2 == 0 else (height, width)

    @property
    def matrix(self) -> np.ndarray:
        """The 3 x 3 affine map from page pixels to frame pixels."""
        width, height = self.page_size
        cos, sin = ((1, 0), (0, 1), (-1, 0), (0, -1))[self.quarter_turns]
        offset = {0: (0, 0), 1: (height - 1, 0), 2: (width - 1, height - 1), 3: (0, width - 1)}
        x, y = offset[self.quarter_turns]
        return np.array([[cos, -sin, x], [sin, cos, y], [0, 0, 1]], dtype=np.float64)

    def from_page(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) page points in the frame."""
        return affine_points(self.matrix, points)

    def to_page(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) integer frame points on the page (exact: a quarter turn moves integers to integers)."""
        return np.rint(affine_points(np.linalg.inv(self.matrix), points)).astype(np.int64)


def on_pixel_indices(transform: np.ndarray) -> np.ndarray:
    """OCR-D's transform (`coords["transform"]` of `image_from_page`) as a map between pixel indices, as
    masks and `ReadingFrame` count them. OCR-D's maps coordinates in which pixel x spans x..x+1 and turns
    about the image's centre (0.5 * width, 0.5 * height): applied to indices, it is a pixel off after a
    quarter or half turn (pixel 0 of a 400-pixel row turned 180° is pixel 399, where it gives 400). The
    same map, through each pixel's centre (index + 0.5)."""
    to_centre = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]], dtype=np.float64)
    return np.linalg.inv(to_centre) @ np.asarray(transform, dtype=np.float64) @ to_centre


def affine_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (..., 2) through the 3 x 3 affine map `matrix`."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ matrix[:2, :2].T + matrix[:2, 2]


def to_page_frame(
    instances: PageInstances,
    transform: np.ndarray,
    page_size: tuple[int, int],
    border: np.ndarray | None = None,
) -> PageInstances:
    """`instances` of the derived image, in the (width, height) pixels of the page (or of its
    `ReadingFrame`: then `transform` and `border` are the frame's).

    `transform` is the 3 x 3 affine map from page to derived-image pixels (`on_pixel_indices` of
    `image_from_page`'s `coords["transform"]`); `border` the page's Border polygon ((N, 2) page pixels), if
    it has one.
    """
    width, height = page_size
    same_frame = (instances.width, instances.height) == (width, height) and np.allclose(transform, np.eye(3))
    if same_frame and border is None:
        return instances
    import cv2
    from pycocotools import mask as mask_utils

    inside = None
    if border is not None:
        inside = np.zeros((height, width), dtype=np.uint8)
        cv2.fillPoly(inside, [np.round(border).astype(np.int32)], 1)

    def move(rle: dict) -> dict:
        mask = mask_utils.decode(rle)
        if not same_frame:
            # With WARP_INVERSE_MAP, page pixel (x, y) takes the derived image's pixel at transform @ (x, y).
            mask = cv2.warpAffine(
                mask,
                np.asarray(transform[:2], dtype=np.float64),
                (width, height),
                flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
        if inside is not None:
            mask &= inside
        return mask_utils.encode(np.asfortranarray(mask))

    return PageInstances(
        height=height,
        width=width,
        class_names=list(instances.class_names),
        masks=[move(rle) for rle in instances.masks],
        boxes=_boxes_on_page(instances.boxes, transform),
        scores=instances.scores.copy(),
        labels=instances.labels.copy(),
        semantic_masks=[move(rle) for rle in instances.semantic_masks],
    )


def _boxes_on_page(boxes: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """The page box around each derived-image box's corners mapped back (xyxy)."""
    if not len(boxes):
        return np.zeros((0, 4), dtype=np.float64)
    x1, y1, x2, y2 = np.asarray(boxes, dtype=np.float64).T
    corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]).transpose(2, 0, 1)  # (K, 4, 2)
    mapped = affine_points(np.linalg.inv(np.asarray(transform, dtype=np.float64)), corners)
    return np.concatenate([mapped.min(axis=1), mapped.max(axis=1)], axis=1)
