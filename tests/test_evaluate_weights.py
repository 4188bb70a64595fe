"""`docsam evaluate --weights` agrees with `docsam segment` followed by `docsam evaluate --pred`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from cli_helpers import overridden
from convert_helpers import coco_document, write_image
from segment_helpers import FAST_GEOMETRY, run_segment
from typer.testing import CliRunner

from docsam_cli.app import app
from docsam_cli.inputs.images import DEFAULT_MAX_IMAGE_PIXELS, max_image_pixels, set_max_image_pixels


@pytest.mark.slow
def test_model_run_scores_like_its_written_predictions(tmp_path, tiny_weights, shared_data):
    source = shared_data / "pages" / "publaynet"
    coco = json.loads((source / "annotations.json").read_text())
    keep = {image["id"] for image in coco["images"][:3]}
    subset = {
        **coco,
        "images": [image for image in coco["images"] if image["id"] in keep],
        "annotations": [a for a in coco["annotations"] if a["image_id"] in keep],
    }
    images = tmp_path / "images"
    images.mkdir()
    for image in subset["images"]:
        shutil.copy(source / "images" / image["file_name"], images / image["file_name"])
    truth = tmp_path / "annotations.json"
    truth.write_text(json.dumps(subset))
    classes = ",".join(sorted(c["name"] for c in coco["categories"]))

    # Segment, then evaluate the written results list (the model's boxes; coco.json's are the masks'):
    # the route through files.
    code, _, stderr = run_segment(
        tiny_weights, tmp_path / "out", str(images), "--classes", classes, "--domain", "", "--format", "coco"
    )
    assert code == 0, stderr
    runner = CliRunner()
    written = runner.invoke(
        app, ["evaluate", str(truth), "--pred", str(tmp_path / "out" / "coco_results.json"), "--json", "-"]
    )
    assert written.exit_code == 0, written.stderr
    # The model run inside evaluate: the same prompts (the ground truth's sorted classes) and geometry.
    direct = runner.invoke(
        app,
        [
            "evaluate",
            str(truth),
            "--weights",
            str(tiny_weights),
            "--domain",
            "",
            *FAST_GEOMETRY,
            "--json",
            "-",
        ],
    )
    assert direct.exit_code == 0, direct.stderr
    from_files, from_model = json.loads(written.stdout), json.loads(direct.stdout)
    assert from_model["images"] == 3
    assert from_model["mask"] == pytest.approx(from_files["mask"], abs=1e-6)
    assert from_model["box"] == pytest.approx(from_files["box"], abs=1e-6)
    assert from_model["mAF"] == pytest.approx(from_files["mAF"], abs=1e-6)


def test_exactly_one_prediction_source(tmp_path, tiny_weights, shared_data):
    truth = str(shared_data / "pages" / "publaynet" / "annotations.json")
    result = CliRunner().invoke(app, ["evaluate", truth])
    assert result.exit_code == 2
    result = CliRunner().invoke(app, ["evaluate", truth, "--pred", truth, "--weights", str(tiny_weights)])
    assert result.exit_code == 2


def test_weights_that_cannot_be_used_are_a_usage_error(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("DOCSAM_HOME", str(tmp_path / "cache"))
    truth = str(shared_data / "pages" / "publaynet" / "annotations.json")
    not_a_checkpoint = tmp_path / "notes.pth"
    not_a_checkpoint.write_text("not a checkpoint")
    for weights in (str(tmp_path / "missing.safetensors"), str(not_a_checkpoint)):
        result = CliRunner().invoke(app, ["evaluate", truth, "--weights", weights, "--device", "cpu"])
        lines = result.stderr.splitlines()
        assert result.exit_code == 2, result.stderr
        assert len(lines) == 1 and lines[0].startswith("error: ") and Path(weights).name in lines[0]


def test_an_image_the_model_cannot_run_on_is_left_out_not_scored_as_misses(tmp_path, tiny_weights):
    """b.png is missing: one error line naming it, and only a.png's ground truth is scored, as a page
    whose predictions cannot be read is left out with --pred."""
    write_image(tmp_path / "a.png", 60, 40, boxes=((10, 10, 40, 30),))
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(coco_document()))
    result = CliRunner().invoke(
        app, ["evaluate", str(truth), "--weights", str(tiny_weights), *FAST_GEOMETRY, "--json", "-"]
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {truth}: images[1]: file_name 'b.png' not found")
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["images_without_predictions"] == []
    assert {name: scores["gt"] for name, scores in report["per_class"].items()} == {"figure": 1, "table": 1}


def test_images_over_the_pixel_limit_can_be_let_through_as_the_error_says(tmp_path, tiny_weights):
    """An image over the pixel limit is refused with "raise the limit with --max-image-pixels if the file is
    trusted": evaluate --weights had no such option, so following the advice was a usage error and such
    pages (large newspaper scans) could not be scored at any setting."""
    write_image(tmp_path / "a.png", 60, 40, boxes=((10, 10, 40, 30),))
    write_image(tmp_path / "b.png", 60, 40)
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(coco_document()))
    arguments = ["evaluate", str(truth), "--weights", str(tiny_weights), *FAST_GEOMETRY, "--json", "-"]
    saved = max_image_pixels()
    try:
        refused = CliRunner().invoke(app, [*arguments, "--max-image-pixels", "2000"])
        lines = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
        assert refused.exit_code == 1, refused.stderr
        for where in ("images[0]", "images[1]"):  # the size the ground truth states, checked first
            assert any(
                f"truth.json: {where}: 60x40 = 2400 pixels exceeds the decompression-bomb limit of 2000 "
                "pixels (raise the limit with --max-image-pixels if the file is trusted)" in line
                for line in lines
            ), lines
        for limit in ("2400", "0"):  # as the error says; 0: no limit
            result = CliRunner().invoke(app, [*arguments, "--max-image-pixels", limit])
            assert result.exit_code == 0, result.stderr
            assert json.loads(result.stdout)["images"] == 2
        assert CliRunner().invoke(app, arguments).exit_code == 0
        assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS  # a run without the option: the default
    finally:
        set_max_image_pixels(saved)


@pytest.mark.parametrize("stated_by", ["coco truth", "page truth", "page predictions"])
def test_a_page_size_stated_without_an_image_is_held_to_the_pixel_limit(tmp_path, stated_by):
    """Ground truth or predictions that state their page's size (COCO width and height, PAGE imageWidth and
    imageHeight) have their masks made at that size without any image read: a stranger's file stating
    100000 x 100000 asked for 10 GB (an empty class's mask alone), and one of 2^32 pixels or more crashed
    pycocotools, 'Segmentation fault', exit 139. Such a page is now held to --max-image-pixels as an image
    read is, and refused in the same words, naming the file."""
    from convert_helpers import page_xml

    truth, pred = tmp_path / "truth", tmp_path / "pred"
    truth.mkdir(), pred.mkdir()
    document = coco_document()
    big = page_xml("a.png", 60, 40, [("TableRegion", None, "10,10 40,10 40,30 10,30")])
    if stated_by == "coco truth":
        truth, pred = truth / "truth.json", pred / "pred.json"
        truth.write_text(json.dumps(document))
        pred.write_text(json.dumps(document))
        refused = f"{truth}: images[0]: 60x40 = 2400 pixels"
    else:
        (truth / "a.xml").write_text(big if stated_by == "page truth" else big.replace('"60"', '"30"'))
        (pred / "a.xml").write_text(big)
        refused = f"{(truth if stated_by == 'page truth' else pred) / 'a.xml'}: 60x40 = 2400 pixels"
    arguments = ["evaluate", str(truth), "--pred", str(pred), "--json", "-", "--max-image-pixels"]
    saved = max_image_pixels()
    try:
        result = CliRunner().invoke(app, [*arguments, "2000"])
        assert result.exit_code == 1, result.stderr
        assert f"error: {refused} exceeds the decompression-bomb limit of 2000 pixels" in result.stderr
        assert CliRunner().invoke(app, [*arguments, "2400"]).exit_code == 0
    finally:
        set_max_image_pixels(saved)


@pytest.mark.parametrize("fmt", ["coco", "page"])
def test_a_predicted_page_over_the_pixel_limit_is_refused_and_left_out_of_the_scores(tmp_path, fmt):
    """Predictions state their page's size (a COCO image's width and height, PAGE's imageWidth and
    imageHeight) and their masks are made at it: a COCO file stating 100000 x 100000 went unchecked, and its
    page took 12 GB before the system killed evaluate; a PAGE file's, refused, had its page scored as all
    missed (mask AP 0.252 here instead of 1.0). Such a page is now refused as the ground truth's are, naming
    the file, and left out of the scores, as a prediction that cannot be read, the other pages scored as
    before."""
    from convert_helpers import page_xml

    truth_document = coco_document()
    truth, pred = tmp_path / "truth.json", tmp_path / "pred"
    truth.write_text(json.dumps(truth_document))
    if fmt == "coco":
        predicted = {
            **truth_document,
            "images": [{**truth_document["images"][0], "height": 50}, truth_document["images"][1]],
            "annotations": [a for a in truth_document["annotations"] if "counts" not in str(a)],
        }
        pred = pred.with_suffix(".json")
        pred.write_text(json.dumps(predicted))
        refused = f"{pred}: images[0]: 60x50 = 3000 pixels"
    else:
        pred.mkdir()
        box = [("TableRegion", None, "5,5 24,5 24,14 5,14")]  # the truth's box, boundary included
        (pred / "a.xml").write_text(page_xml("a.png", 60, 50, box))
        (pred / "b.xml").write_text(page_xml("b.png", 60, 40, box))
        refused = f"{pred / 'a.xml'}: 60x50 = 3000 pixels"
    arguments = ["evaluate", str(truth), "--pred", str(pred), "--json", "-", "--max-image-pixels", "2500"]
    saved = max_image_pixels()
    try:
        result = CliRunner().invoke(app, arguments)
    finally:
        set_max_image_pixels(saved)
    assert result.exit_code == 1, result.stderr
    assert f"error: {refused} exceeds the decompression-bomb limit of 2500 pixels" in result.stderr
    report = json.loads(result.stdout)
    assert (report["images"], report["mask"]["AP"]) == (1, pytest.approx(1.0))


def test_a_page_of_more_pixels_than_a_coco_mask_holds_is_refused_whatever_the_limit(tmp_path):
    """With no pixel limit (--max-image-pixels 0, as for trusted large scans), ground truth stating a page of
    2^32 pixels or more crashed pycocotools, which counts a mask's pixels in 32 bits: 'Segmentation fault',
    exit 139, no report. Such a page is now refused naming the file, and the run goes on (run in a process of
    its own, which the crash ended)."""
    import subprocess
    import sys

    side = 70_000  # 4.9e9 pixels
    document = {
        "images": [{"id": 1, "file_name": "a.png", "width": side, "height": side}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, side, 0, side, side, 0, side]]}
        ],
        "categories": [{"id": 1, "name": "table"}],
    }
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(document))
    command = [sys.executable, "-m", "docsam_cli", "evaluate", str(truth), "--pred", str(truth)]
    result = subprocess.run(
        [*command, "--max-image-pixels", "0"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1, (result.returncode, result.stderr)
    refusal = "70000x70000 = 4900000000 pixels: more than a COCO mask holds (4294967295)"
    assert f"error: {truth}: images[0]: {refusal}" in result.stderr.splitlines()


def test_images_read_for_their_size_are_held_to_the_pixel_limit_the_command_takes(tmp_path):
    """Ground truth that states no page size has its images read for it, with --pred too: their limit is
    evaluate's --max-image-pixels, not only with --weights, and a refusal says so as the model's does."""
    write_image(tmp_path / "a.png", 60, 40, boxes=((10, 10, 40, 30),))
    write_image(tmp_path / "b.png", 60, 40)
    document = coco_document()
    truth = tmp_path / "truth.json"
    first_page = [annotation for annotation in document["annotations"] if annotation["image_id"] == 1]
    unsized = {**document, "images": [{"id": 1, "file_name": "a.png"}], "annotations": first_page}
    truth.write_text(json.dumps(unsized))
    arguments = ["evaluate", str(truth), "--pred", str(tmp_path / "pred.json"), "--json", "-"]
    (tmp_path / "pred.json").write_text(json.dumps(document))
    saved = max_image_pixels()
    try:
        refused = CliRunner().invoke(app, [*arguments, "--max-image-pixels", "2000"])
        assert refused.exit_code == 1, refused.stderr
        assert (
            f"error: {tmp_path / 'a.png'}: 2400 pixels exceeds the decompression-bomb limit of 2000 pixels "
            "(raise the limit with --max-image-pixels if the file is trusted)"
        ) in refused.stderr.splitlines()
        result = CliRunner().invoke(app, [*arguments, "--max-image-pixels", "0"])
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["images"] == 1
    finally:
        set_max_image_pixels(saved)


@pytest.mark.slow
def test_model_run_predicts_exactly_what_segment_writes(tmp_path, tiny_weights, shared_data):
    """Ground truth made of segment's own detections, declaring a class none of them has: `evaluate --pred`
    on segment's coco_results.json scores mask AP 1, and `evaluate --weights` the same. It prompted only the
    annotated classes (other detections) and scored the model's raw boxes (inverted, off the page) instead
    of the sorted, clipped boxes segment writes."""
    images = tmp_path / "images"
    images.mkdir()
    for name in sorted(path.name for path in (shared_data / "pages" / "publaynet" / "images").iterdir())[:2]:
        shutil.copy(shared_data / "pages" / "publaynet" / "images" / name, images / name)
    classes = ["figure", "list", "table", "text", "title"]
    out = tmp_path / "out"
    code, _, stderr = run_segment(
        tiny_weights, out, str(images), "--classes", ",".join(classes), "--domain", "", "--format", "coco"
    )
    assert code == 0, stderr
    written = json.loads((out / "coco.json").read_text())
    used = {annotation["category_id"] for annotation in written["annotations"]}
    assert len(used) < len(classes)  # a declared class without an instance: still prompted
    truth = tmp_path / "truth.json"
    truth.write_text(
        json.dumps({**written, "images": [{**i, "file_name": i["file_name"]} for i in written["images"]]})
    )
    reports = []
    for source in (
        ["--pred", str(out / "coco_results.json")],  # the model's boxes, as written
        ["--weights", str(tiny_weights), "--domain", "", *FAST_GEOMETRY],
    ):
        result = CliRunner().invoke(
            app, ["evaluate", str(truth), "--images", str(images), *source, "--json", "-"]
        )
        assert result.exit_code == 0, result.stderr
        reports.append(json.loads(result.stdout))
    from_files, from_model = reports
    assert from_files["mask"]["AP"] == pytest.approx(1.0)
    for key in ("mask", "box", "mAF"):
        assert from_model[key] == pytest.approx(from_files[key], abs=1e-6), key


@pytest.mark.parametrize(
    ("options", "described"),
    [
        (
            ["--window", "64", "--stride", "48", "--no-keep-size"],
            "short side 192; windows 64x64 at stride 48x48",
        ),
        (["--short-side", "96,320", "--keep-size"], "short side 96-320, keep size; windows 64x64"),
    ],
)
def test_model_run_takes_segments_geometry_options(tmp_path, tiny_weights, options, described):
    """`evaluate --weights` offers segment's --stride and --keep-size/--no-keep-size too: without them a
    model could not be scored at the geometry `segment` ran it at."""
    write_image(tmp_path / "a.png", 60, 40, boxes=((10, 10, 40, 30),))
    write_image(tmp_path / "b.png", 60, 40)
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(coco_document()))
    args = ["evaluate", str(truth), "--weights", str(tiny_weights), "--device", "cpu"]
    geometry = [*overridden(["--short-side", "192", "--window", "64"], options), *options]
    result = CliRunner().invoke(app, ["-v", *args, *geometry, "--json", "-"])
    assert result.exit_code == 0, result.stderr
    assert f"geometry: {described}" in result.stderr


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--domain", "Gazettes"], "--domain needs"),
        (["--variant", "base", "--domain", ""], "--variant, --domain need"),
    ],
)
def test_model_options_without_a_model_are_refused_not_ignored(tmp_path, options, named):
    """`evaluate --pred coco.json --domain Gazettes` scored the predictions as they were, the domain (and
    --variant, --model-config) ignored without a word, where the geometry options are refused."""
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(coco_document()))
    result = CliRunner().invoke(app, ["evaluate", str(truth), "--pred", str(truth), *options])
    assert result.exit_code == 2 and result.stdout == ""
    assert f"{named} --weights" in result.stderr


def test_a_domain_that_is_not_utf8_is_refused_before_the_model_runs(tmp_path, monkeypatch):
    """`evaluate --weights W --domain $'B\\xfccher'` (typed in a Latin-1 terminal) ended in 'error: internal
    error: TypeError: TextEncodeInput must be ...' once the model was loaded: its tokenizer takes no such
    byte. It is a usage error naming the option, before the weights are looked at (these do not exist)."""
    monkeypatch.setenv("DOCSAM_HOME", str(tmp_path / "cache"))
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(coco_document()))
    domain = os.fsdecode(b"B\xfccher")
    result = CliRunner().invoke(app, ["evaluate", str(truth), "--weights", "nowhere.pth", "--domain", domain])
    assert result.exit_code == 2 and result.stdout == ""
    assert "--domain 'B\\xfccher' holds a byte that is not UTF-8" in result.stderr


def test_geometry_options_without_a_model_are_refused(tmp_path):
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(coco_document()))
    result = CliRunner().invoke(app, ["evaluate", str(truth), "--pred", str(truth), "--stride", "32"])
    assert result.exit_code == 2
    assert "need --weights" in result.stderr


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--precision", "bf16"], "--precision needs --weights"),
        (["--device", "cuda:1", "--precision", "fp32"], "--device, --precision need --weights"),
    ],
)
def test_device_and_precision_without_a_model_are_refused(tmp_path, options, said):
    """`evaluate GT --pred run/coco.json --precision bf16` (or `--device cuda`) scored the predictions read
    as they were, the option passed over without a word, as the other model options no longer are; they
    are refused likewise, also given at their defaults."""
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(coco_document()))
    result = CliRunner().invoke(app, ["evaluate", str(truth), "--pred", str(truth), *options])
    assert result.exit_code == 2 and result.stdout == ""
    assert said in " ".join(result.stderr.replace("│", " ").split())


def test_ground_truth_classes_the_model_reads_alike_are_refused_before_it_loads(tmp_path, monkeypatch):
    """The model is prompted with the ground truth's class names: 图 (figure) and 表 (table) both read as
    [UNK], so 表 could never win a region and was scored as all misses. It is refused, as `segment
    --classes 图,表` is, before the weights are looked at (these do not exist)."""
    monkeypatch.setenv("DOCSAM_HOME", str(tmp_path / "cache"))
    write_image(tmp_path / "a.png", 60, 40, boxes=((10, 10, 40, 30),))
    write_image(tmp_path / "b.png", 60, 40)
    document = coco_document()
    document["categories"] = [{"id": 1, "name": "表"}, {"id": 2, "name": "图"}]
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(document))
    weights = str(tmp_path / "missing.safetensors")
    result = CliRunner().invoke(app, ["evaluate", str(truth), "--weights", weights, "--device", "cpu"])
    assert result.exit_code == 2, result.stderr
    assert "the ground truth names a class twice: '表' (as '图'; the model reads both as the same " in (
        " ".join(result.stderr.split())
    )
    assert "missing.safetensors" not in result.stderr


def test_placeholder_categories_of_annotation_tools_are_not_prompted(tmp_path, tiny_weights, monkeypatch):
    """Roboflow's COCO export declares its project as category 0, every other category's supercategory,
    and labelme2coco declares `_background_`; no annotation names either. `evaluate --weights` prompted
    the model with both as classes, whose pixels then cost every page's mIoU; they are now no classes (the
    reference's loader, like conversion, drops `_background_`), while a category that is its own
    supercategory, as Label Studio writes them, stays one."""
    from docsam_cli.model_evaluation import ModelRun

    prompted: list[list[str]] = []
    predict = ModelRun.predict
    monkeypatch.setattr(
        ModelRun,
        "predict",
        lambda run, images, classes: prompted.append(classes) or predict(run, images, classes),
    )
    write_image(tmp_path / "a.png", 60, 40, boxes=((10, 10, 40, 30),))
    write_image(tmp_path / "b.png", 60, 40)
    document = coco_document()
    document["categories"] = [
        {"id": 0, "name": "layout-xyz", "supercategory": "none"},
        {"id": 1, "name": "table", "supercategory": "layout-xyz"},
        {"id": 2, "name": "figure", "supercategory": "figure"},
        {"id": 3, "name": "_background_", "supercategory": None},
        {"id": 4, "name": "list", "supercategory": "layout-xyz"},
    ]
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(document))
    geometry = ["--short-side", "192", "--window", "64"]
    result = CliRunner().invoke(app, ["evaluate", str(truth), "--weights", str(tiny_weights), *geometry])
    assert result.exit_code == 0, result.stderr
    assert prompted == [["figure", "list", "table"]]
