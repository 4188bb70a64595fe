"""docsam's regions put into a page's PAGE document (OCR-D's object model), at the page level.

The regions, their text lines and their reading order are those of `docsam segment --format page`: the
PAGE writer (`writers.page_xml.write_page_content`) builds them, and they are read into OCR-D's objects
as they are. How they meet what the page already holds is the `existing_regions` parameter:

- `replace`: every region of the page (with its lines, words and glyphs) goes, and so do the reading
  order, layers and relations, which refer to regions; the new regions and their reading order take their
  place, with the writer's ids (`r1`, `r1_l1`, `ro1`, ...).
- `keep`: everything stays. The new regions are added with ids the document does not use yet (`r1`, ...,
  else `docsam_r1`, ..., `docsam2_r1`, ...), and their reading order goes after the page's: appended to
  its top-level OrderedGroup, or as an OrderedGroup inside its top-level UnorderedGroup; a page without a
  reading order gets theirs. New regions that overlap existing ones are added all the same.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
from lxml import etree
from ocrd_models.ocrd_page import (
    OcrdPage,
    OrderedGroupType,
    PageType,
    ReadingOrderType,
    RegionRefIndexedType,
    to_xml,
)

from docsam_cli.ocrd.parameters import ExistingRegions
from docsam_cli.writers.class_map import ClassMap
from docsam_cli.writers.layout import PointMap
from docsam_cli.writers.page_map import REGION_ELEMENTS
from docsam_cli.writers.page_xml import PAGE_NAMESPACE, write_page_content
from docsam_cli.writers.shapes import PageShapes
from docsam_cli.writers.xml_tree import points_text


def add_regions(
    pcgts: OcrdPage,
    shapes: PageShapes,
    page_map: ClassMap | None,
    existing: ExistingRegions,
    to_page: PointMap | None = None,
    upright: PointMap | None = None,
) -> int:
    """Put the regions of `shapes` into `pcgts`'s page; return how many were added. `shapes` are in page
    pixels, or in a frame whose integer points `to_page` maps onto the page (`frame.ReadingFrame`); they are
    ordered where `upright` maps their points (see `layout.page_layout`)."""
    page = pcgts.get_Page()
    if existing == "replace":
        _remove_regions(page)
    content = _page_content(shapes, page_map, _ids_in(pcgts), to_page, upright)
    added = 0
    for element in REGION_ELEMENTS:
        for region in getattr(content, f"get_{element}")():
            getattr(page, f"add_{element}")(region)
            added += 1
    order = content.get_ReadingOrder()
    if order is not None:
        _append_reading_order(page, order.get_OrderedGroup())
    return added


def _remove_regions(page: PageType) -> None:
    for element in REGION_ELEMENTS:
        getattr(page, f"set_{element}")([])
    page.set_ReadingOrder(None)
    page.set_Layers(None)
    page.set_Relations(None)


def _page_content(
    shapes: PageShapes,
    page_map: ClassMap | None,
    taken: set[str],
    to_page: PointMap | None,
    upright: PointMap | None,
) -> PageType:
    """The writer's reading order and regions as OCR-D objects, under the first id prefix whose ids are
    all free, their points (Coords, Baseline) mapped by `to_page`."""
    for prefix in _id_prefixes():
        page = etree.Element(f"{{{PAGE_NAMESPACE}}}Page", nsmap={None: PAGE_NAMESPACE})
        write_page_content(page, shapes, page_map, id_prefix=prefix, upright=upright)
        if taken.isdisjoint(page.xpath("//@id")):
            break
    if to_page is not None:
        for element in page.iter(f"{{{PAGE_NAMESPACE}}}Coords", f"{{{PAGE_NAMESPACE}}}Baseline"):
            points = np.array([pair.split(",") for pair in element.get("points").split()], dtype=np.int64)
            element.set("points", points_text(to_page(points)))
    content = PageType.factory()
    content.build(page)
    return content


def _id_prefixes() -> Iterator[str]:
    """The id prefixes to try, in order: none, docsam_, docsam2_, docsam3_, ..."""
    yield ""
    yield "docsam_"
    for number in itertools.count(2):
        yield f"docsam{number}_"


def _ids_in(pcgts: OcrdPage) -> set[str]:
    """Every id the document holds now (its object tree may have changed since it was parsed)."""
    root = etree.fromstring(to_xml(pcgts).encode("utf-8"))
    return set(root.xpath("//@id"))


def _append_reading_order(page: PageType, group: OrderedGroupType) -> None:
    """Add `group` (the new regions in reading order) to the page's reading order (see the module doc)."""
    order = page.get_ReadingOrder()
    if order is None:
        page.set_ReadingOrder(ReadingOrderType(OrderedGroup=group))
        return
    top = order.get_OrderedGroup() or order.get_UnorderedGroup()
    if top is None:
        order.set_OrderedGroup(group)
    elif isinstance(top, OrderedGroupType):
        start = 1 + max((entry.get_index() for entry in top.get_AllIndexed()), default=-1)
        for offset, reference in enumerate(group.get_RegionRefIndexed()):
            top.add_RegionRefIndexed(
                RegionRefIndexedType(index=start + offset, regionRef=reference.get_regionRef())
            )
    else:
        top.add_OrderedGroup(group)
