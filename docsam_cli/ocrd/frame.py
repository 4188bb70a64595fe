"""Instances found on OCR-D's derived page image, moved into the pixels of the page itself.

OCR-D hands a processor the page image as the workflow has prepared it so far: cropped to the page's
`Border`, rotated by its `@orientation` (deskewed), together with the affine transform from page pixels to
the derived image's pixels (`Workspace.image_from_page`). PAGE coordinates always refer to the original
page image. Transforming the finished polygons (`ocrd_utils.coordinates_for_segment`) would rotate and
round them, so they could lose the validity `docsam_cli.polygons` gives them and text lines could leave
their regions. The masks are moved instead (nearest-neighbour resampling through the same transform), and
the polygons are then traced on the page by the code behind `docsam segment --format page`. Masks are cut
to the page and, where the page has a `Border`, to its polygon, so every region lies inside both.
"""

from __future__ import annotations

import numpy as np

from model.instances import PageInstances


def to_page_frame(
    instances: PageInstances,
    transform: np.ndarray,
    page_size: tuple[int, int],
    border: np.ndarray | None = None,
) -> PageInstances:
    """`instances` of the derived image, in the page's (width, height) pixels.

    `transform` is the 3 x 3 affine map from page to derived-image coordinates (`coords["transform"]` of
    `image_from_page`); `border` the page's Border polygon ((N, 2) page pixels), if it has one.
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
    to_page = np.linalg.inv(np.asarray(transform, dtype=np.float64))
    x1, y1, x2, y2 = np.asarray(boxes, dtype=np.float64).T
    corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]).transpose(2, 0, 1)  # (K, 4, 2)
    mapped = corners @ to_page[:2, :2].T + to_page[:2, 2]
    return np.concatenate([mapped.min(axis=1), mapped.max(axis=1)], axis=1)
