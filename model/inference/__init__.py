"""Page → windows → batched forward → per-patch post-processing → merge → original coordinates.

The reference's sliding-window inference (its `test.py`), reproduced exactly in the resized page's frame
(`predict_pages`), then mapped back to each page's own pixels (`segment_page`, `segment_pages`). The
pipeline and the rules it keeps are described in docs/design.md.
"""

from model.inference.forward import PatchOutputs, SegmentationModel, forward_pages
from model.inference.geometry import Geometry, PageLayout, plan_page, resized_size, window_boxes
from model.inference.mapping import encode_resampled, to_page_instances
from model.inference.merge import SlideWindowResult, merge_patches
from model.inference.pipeline import PagePrediction, predict_pages, prompt_names, segment_page, segment_pages
from model.inference.postprocess import PatchDetections, postprocess_patches
from model.inference.preprocess import PatchBatch, make_patches

__all__ = [
    "Geometry",
    "PageLayout",
    "PagePrediction",
    "PatchBatch",
    "PatchDetections",
    "PatchOutputs",
    "SegmentationModel",
    "SlideWindowResult",
    "encode_resampled",
    "forward_pages",
    "make_patches",
    "merge_patches",
    "plan_page",
    "postprocess_patches",
    "predict_pages",
    "prompt_names",
    "resized_size",
    "segment_page",
    "segment_pages",
    "to_page_instances",
    "window_boxes",
]
