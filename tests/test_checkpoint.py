"""Checkpoint compatibility: official key layout, strict loading, safe unpickling, our own format."""

from __future__ import annotations

import json
import pickle
import re
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model import CheckpointError, DocSAM, load_model, save_model, variant_config
from model.checkpoint import (
    detect_variant,
    load_weights,
    read_state_dict,
    stored_metadata,
    to_model_keys,
    to_reference_keys,
    write_safetensors,
)
from model.config import VARIANTS

REFERENCE_COUNTS = {"base": 208_558_536, "large": 317_370_884}
SWIN_PATCH_EMBEDDING = (
    "mask2former.model.pixel_level_module.encoder.embeddings.patch_embeddings.projection.weight"
)


def assert_same_weights(actual: torch.nn.Module, expected: torch.nn.Module) -> None:
    actual_state, expected_state = actual.state_dict(), expected.state_dict()
    assert actual_state.keys() == expected_state.keys()
    for key, value in expected_state.items():
        assert torch.equal(actual_state[key], value), key


@pytest.mark.parametrize("variant", ["base", "large"])
def test_official_key_layout_maps_one_to_one(reference_fixtures, variant):
    listing = json.loads((reference_fixtures / f"keys-{variant}.json").read_text())["state_dict"]
    assert len(listing) == 1550
    with torch.device("meta"):
        model = DocSAM(variant_config(variant))
    ours = model.state_dict()
    mapped, dropped = {}, []
    for entry in listing:
        names = list(to_model_keys({entry["key"]: torch.empty(0)}))
        if not names:
            dropped.append(entry["key"])
            continue
        (name,) = names
        assert name not in mapped, f"two reference keys map to {name}"
        mapped[name] = entry
    # Only the Swin relative-position indices (one per block) are not loaded: transformers computes them.
    assert len(dropped) == sum(variant_config(variant).backbone.depths) == 24
    assert all(key.endswith(".attention.self.relative_position_index") for key in dropped)
    assert set(mapped) == set(ours)
    for name, entry in mapped.items():
        assert list(ours[name].shape) == entry["shape"], name
        assert str(ours[name].dtype) == f"torch.{entry['dtype']}", name
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_COUNTS[variant]
    # A state dict under the reference names loads strictly (shapes and names checked, nothing left over).
    reference_named = {entry["key"]: torch.empty(entry["shape"], device="meta") for entry in listing}
    load_weights(model, reference_named)
    assert detect_variant(reference_named) == variant


@pytest.mark.parametrize("variant", ["base", "large"])
def test_the_reference_names_given_are_the_official_ones(reference_fixtures, variant):
    """`to_reference_keys` names the weights as the official checkpoints do (ARCHITECTURE §2.3: Swin in the
    transformers 4.x names, `attention.self.query`), but for the relative-position indices it leaves out."""
    listing = json.loads((reference_fixtures / f"keys-{variant}.json").read_text())["state_dict"]
    with torch.device("meta"):
        model = DocSAM(variant_config(variant))
    official = {entry["key"] for entry in listing if not entry["key"].endswith(".relative_position_index")}
    assert set(to_reference_keys(model.state_dict())) == official


def test_dropped_swin_indices_equal_the_computed_ones(tiny_reference_state, tiny_model):
    stored = [value for key, value in tiny_reference_state.items() if key.endswith("relative_position_index")]
    computed = [value for key, value in tiny_model.named_buffers() if key.endswith("relative_position_index")]
    assert len(stored) == len(computed) == sum(tiny_model.config.backbone.depths)
    for index, (reference, ours) in enumerate(zip(stored, computed, strict=True)):
        torch.testing.assert_close(ours, reference.flatten(), rtol=0, atol=0, msg=f"block {index}")


def test_files_with_the_earlier_backbone_names_load(tiny_reference_state, tiny_model, tiny_config):
    """docsam files written before the switch to transformers' Swin named the backbone as transformers 4.x
    does (the official names under `backbone.`, relative-position indices included)."""
    encoder = "mask2former.model.pixel_level_module.encoder."
    earlier = {
        key: value for key, value in tiny_model.state_dict().items() if not key.startswith("backbone.")
    }
    earlier.update(
        {
            "backbone." + key.removeprefix(encoder): value
            for key, value in tiny_reference_state.items()
            if key.startswith(encoder)
        }
    )
    assert "backbone.encoder.layers.0.blocks.1.attention.self.query.weight" in earlier
    assert "backbone.encoder.layers.0.blocks.1.attention.self.relative_position_index" in earlier
    loaded = load_model(earlier, config=tiny_config)
    assert_same_weights(loaded, tiny_model)


def test_reference_files_saved_with_the_current_transformers_swin_names_load(tiny_model, tiny_config):
    """The reference run on transformers 5 (fine-tuning with its train.py) saves its `SwinBackbone` under the
    names the current release gives it (`encoder.swin.encoder.layers.0.blocks.0.attention.q_proj.weight`,
    `encoder.hidden_states_norms.stage1.weight`): such files were refused, every Swin entry missing."""
    encoder = "mask2former.model.pixel_level_module.encoder."
    saved = {
        key: value
        for key, value in to_reference_keys(tiny_model.state_dict()).items()
        if not key.startswith(encoder)
    }
    saved.update({encoder + key: value for key, value in tiny_model.backbone.swin.state_dict().items()})
    assert encoder + "swin.encoder.layers.0.blocks.1.attention.q_proj.weight" in saved
    assert encoder + "hidden_states_norms.stage4.weight" in saved

    loaded = load_model(saved, config=tiny_config)

    assert_same_weights(loaded, tiny_model)
    patch = torch.empty(128, 3, 4, 4, device="meta")
    assert detect_variant({encoder + "swin.embeddings.patch_embeddings.projection.weight": patch}) == "base"


def test_variant_detection_reads_the_variants_table():
    for name, config in VARIANTS.items():
        width = config.backbone.embed_dim
        assert detect_variant({SWIN_PATCH_EMBEDDING: torch.empty(width, 3, 4, 4, device="meta")}) == name
    with pytest.raises(
        CheckpointError, match=r"Swin width 96 is none of the variants' \(base 128, large 192\)"
    ):
        detect_variant({SWIN_PATCH_EMBEDDING: torch.empty(96, 3, 4, 4, device="meta")})


def test_reference_named_state_round_trips(tiny_model, tiny_config):
    reference = to_reference_keys(tiny_model.state_dict())
    assert all(key.startswith("mask2former.model.") for key in reference)
    rebuilt = load_model({"module." + key: value for key, value in reference.items()}, config=tiny_config)
    assert_same_weights(rebuilt, tiny_model)


def test_strict_loading_lists_what_is_wrong(tiny_reference_state, tiny_config):
    state = dict(tiny_reference_state)
    del state["mask2former.model.transformer_module.proposal_bboxes.weight"]
    state["mask2former.model.transformer_module.extra.weight"] = torch.zeros(1)
    state["mask2former.model.transformer_module.instance_queries.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError) as error:
        load_model(state, config=tiny_config)
    message = str(error.value)
    assert "missing: proposal_bboxes.weight" in message
    assert "unexpected: extra.weight" in message
    assert "wrong shape: instance_queries.weight (3, 3)" in message


def test_harmless_legacy_entries_are_accepted(tiny_reference_state, tiny_config):
    state = dict(tiny_reference_state)
    state["mask2former.model.transformer_module.textual_encoder.embeddings.position_ids"] = torch.arange(512)[
        None
    ]
    for key in [k for k in state if ".fpn." in k]:  # torchvision < 0.13 names: no Sequential index
        state[key.replace(".0.weight", ".weight").replace(".0.bias", ".bias")] = state.pop(key)
    load_model(state, config=tiny_config)


def test_pth_is_read_without_unpickling_objects(tmp_path, tiny_model, tiny_config):
    path = tmp_path / "docsam.pth"
    torch.save(to_reference_keys(tiny_model.state_dict()), path)
    loaded = load_model(path, config=tiny_config)
    assert torch.equal(loaded.proposal_bboxes.weight, tiny_model.proposal_bboxes.weight)

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled arbitrary code",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"weights": Payload()}))
    with pytest.raises(CheckpointError, match=r"evil\.pth: not a readable checkpoint"):
        read_state_dict(evil)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_corrupt_files_give_one_line_errors(tmp_path, content):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        read_state_dict(path)
    assert "broken.safetensors" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_state_dict(tmp_path / "absent.pth")


def test_saved_model_carries_its_config(tmp_path, tiny_model):
    path = tmp_path / "tuned.safetensors"
    save_model(tiny_model, path)
    loaded = load_model(path)  # no variant, no config: read from the file's metadata
    assert loaded.config == tiny_model.config
    assert_same_weights(loaded, tiny_model)


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        ("{bad", "Expecting property name"),
        ("null", "needs 'swin_backbone_config' and 'mask2former_config' sections"),
        (
            '{"swin_backbone_config": {}, "mask2former_config": null}',
            "'mask2former_config' must be a section",
        ),
        (
            '{"swin_backbone_config": {"embed_dim": "12"}, "mask2former_config": {}}',
            "embed_dim must be an integer",
        ),
    ],
    ids=["bad-json", "not-an-object", "null-section", "wrong-type"],
)
def test_a_broken_stored_config_is_a_checkpoint_error_naming_the_file(tmp_path, stored, reason):
    path = tmp_path / "tuned.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"docsam_config": stored})
    with pytest.raises(CheckpointError) as error:
        load_model(path)
    message = str(error.value)
    assert message.startswith(f"{path}: its stored DocSAM config is not usable (") and reason in message


def test_an_option_given_wins_over_the_stored_config_for_every_command(tmp_path, tiny_config):
    """`segment` and `evaluate` (`load_model`) and `finetune` (`model_from_checkpoint`) build the same
    architecture for a file: the config or variant asked for, else the stored one, else the detected one."""
    from model.checkpoint import checkpoint_config

    path = tmp_path / "tuned.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"docsam_config": json.dumps(tiny_config.to_dict())})
    state = {"w": torch.zeros(1)}
    assert checkpoint_config(path, state) == tiny_config
    assert checkpoint_config(path, state, variant="large") == variant_config("large")
    assert checkpoint_config(path, state, "large", config=variant_config("base")) == variant_config("base")
    official = {SWIN_PATCH_EMBEDDING: torch.zeros(192, 3, 4, 4)}
    assert checkpoint_config(tmp_path / "official.pth", official) == variant_config("large")


def test_variant_detection_errors_name_the_file(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save({SWIN_PATCH_EMBEDDING: torch.zeros(12, 3, 4, 4)}, path)
    with pytest.raises(CheckpointError, match=rf"^{path}: Swin width 12 is none of the variants' "):
        load_model(path)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(1)}, str(other))
    with pytest.raises(CheckpointError, match=rf"^{other}: not DocSAM weights"):
        load_model(other)


def test_weights_of_another_model_are_refused_as_such_not_sent_to_the_variant_options(tmp_path):
    """A transformers Mask2Former checkpoint (the model zoo lists two, for `train`) given as DocSAM weights
    was told to "pass a variant or a model config", which can never make it load: every DocSAM architecture
    has the Swin patch embedding it lacks under DocSAM's names."""
    path = tmp_path / "model.safetensors"
    save_file(
        {
            "model.pixel_level_module.encoder.embeddings.patch_embeddings.projection.weight": torch.zeros(
                128, 3, 4, 4
            ),
            "class_predictor.weight": torch.zeros(134, 256),
        },
        str(path),
    )
    with pytest.raises(CheckpointError) as error:
        load_model(path)
    assert str(error.value) == (
        f"{path}: not DocSAM weights (no DocSAM Swin patch embedding among its 2 entries: "
        "class_predictor.weight, model.pixel_level_module.encoder.embeddings.patch_embeddings.projection."
        "weight)"
    )


@pytest.mark.parametrize("name", ["empty.safetensors", "empty.pth"])
def test_weights_without_tensors_are_refused_saying_so(tmp_path, name) -> None:
    """A file of no tensors was 'not DocSAM weights (... among its 0 entries: )', a list cut off empty."""
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file({}, str(path))
    else:
        torch.save({}, path)
    with pytest.raises(CheckpointError) as error:
        load_model(path)
    assert (
        str(error.value)
        == f"{path}: not DocSAM weights (no DocSAM Swin patch embedding; it holds no tensors)"
    )


def test_the_file_format_is_read_from_the_content_and_refusals_say_what_the_file_is(tmp_path) -> None:
    import numpy as np

    from model.checkpoint import write_safetensors

    state = {"w": torch.arange(6.0).reshape(2, 3)}
    renamed = tmp_path / "weights.bin"
    write_safetensors(state, renamed)
    assert torch.equal(read_state_dict(renamed)["w"], state["w"])

    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    pickled = tmp_path / "objects.pth"
    torch.save({"w": np.zeros(3)}, pickled)
    scripted = tmp_path / "scripted.pth"  # torch.load would run its code (torch.jit.load)
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    for path, reason in (
        (text, "not a PyTorch or safetensors checkpoint"),
        (pickled, "it holds Python objects (numpy."),
        (scripted, "a TorchScript model, which holds code; save its state_dict() instead"),
    ):
        with pytest.raises(CheckpointError) as caught, warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            read_state_dict(path)
        assert not warned, "torch's own words reached stderr before the error line"
        message = str(caught.value)
        assert message.startswith(f"{path}: not a readable checkpoint ({reason}")
        assert "weights_only" not in message and "\x1b" not in message and "\n" not in message


def test_a_pth_renamed_safetensors_is_read_as_the_pth_it_is(tmp_path) -> None:
    """torch.load, given a path ending in `.safetensors`, reads it as safetensors whatever it holds: a `.pth`
    renamed so was refused as 'not a readable checkpoint (... header too large)'."""
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    path = tmp_path / "weights.safetensors"
    torch.save(state, path)
    assert torch.equal(read_state_dict(path)["w"], state["w"])


def test_weights_zipped_for_download_are_refused_saying_to_unzip_them(tmp_path) -> None:
    """A `.pth` inside a zip archive (as Google Drive serves files downloaded together) was refused in
    torch's words: 'Expected hasRecord("version") to be true, but got false. (Could this error message be
    improved? If so, please report an enhancement request to PyTorch.)'."""
    import zipfile

    inner = tmp_path / "docsam.pth"
    torch.save({"w": torch.zeros(2)}, inner)
    path = tmp_path / "docsam-20250101T000000Z-001.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(inner, "docsam/docsam.pth")

    with pytest.raises(CheckpointError) as error:
        read_state_dict(path)

    assert str(error.value) == (
        f"{path}: not a readable checkpoint (a zip archive of docsam/docsam.pth, not a PyTorch checkpoint; "
        "unzip it and give the weights file it holds)"
    )


@pytest.mark.parametrize("cut", [False, True], ids=["whole", "cut-off"])
def test_weights_tarred_to_be_copied_are_refused_saying_to_unpack_them_not_to_load_them_unsafely(
    tmp_path, cut
) -> None:
    """A `.pth` inside a tar archive (`tar cf weights.tar docsam.pth`, to copy it) was refused in torch's
    words for its legacy tar format, which advise the load that runs arbitrary code docsam never makes:
    'Cannot use ``weights_only=True`` with files saved in the legacy .tar format. ... Re-running `torch.load`
    with `weights_only` set to `False` will likely succeed, but it can result in arbitrary code execution.'"""
    import tarfile

    inner = tmp_path / "docsam.pth"
    torch.save({"w": torch.zeros(4096)}, inner)
    path = tmp_path / "weights.tar"
    with tarfile.open(path, "w") as archive:
        archive.add(inner, "docsam/docsam.pth")
    if cut:
        path.write_bytes(path.read_bytes()[:8192])

    with pytest.raises(CheckpointError) as error:
        read_state_dict(path)

    assert str(error.value) == (
        f"{path}: not a readable checkpoint (a tar archive of docsam/docsam.pth, not a PyTorch checkpoint; "
        "unpack it and give the weights file it holds)"
    )


def test_a_file_of_zeros_is_refused_as_no_checkpoint_not_with_advice_to_load_it_unsafely(tmp_path) -> None:
    """A file of zeros (space a copy or download reserved and never wrote, a failing disk) reads as an empty
    tar archive, which torch takes for its legacy tar format: it was refused in torch's words, advising a
    load that can run arbitrary code ('Re-running `torch.load` with `weights_only` set to `False` will likely
    succeed ...')."""
    path = tmp_path / "docsam.pth"
    path.write_bytes(bytes(1 << 20))

    with pytest.raises(CheckpointError) as error:
        read_state_dict(path)

    assert str(error.value) == f"{path}: not a readable checkpoint (not a PyTorch or safetensors checkpoint)"


@pytest.mark.parametrize("name", ["docsam_large_all_dataset.pth", "model.safetensors"])
def test_a_web_page_saved_in_the_weights_place_is_named_as_such(tmp_path, name) -> None:
    """`wget` of the model zoo's Google Drive link saves Drive's page warning that it cannot scan the file
    for viruses, under the name given: it was refused as 'not a readable checkpoint (not a PyTorch or
    safetensors checkpoint)', leaving the user to find out that the 2 KB file is a web page."""
    path = tmp_path / name
    path.write_text(
        "\ufeff\n<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>\n",
        encoding="utf-8",
    )

    with pytest.raises(CheckpointError) as error:
        read_state_dict(path)

    assert str(error.value) == (
        f"{path}: not a readable checkpoint (an HTML page, not weights: a web page saved in their place, as "
        "wget or curl of a Google Drive link saves Drive's warning page; download the file itself (the model "
        "zoo's with `docsam download-weights NAME`))"
    )


@pytest.mark.parametrize("text", ["Quota exceeded", "hello world\n", "step,loss\n1,0.5\n"])
def test_a_text_file_is_refused_as_no_checkpoint_not_in_the_unpicklers_words(tmp_path, text) -> None:
    """A text file given as weights (a note, a log, a server's message saved under the name) was refused in
    the words of torch's unpickler: 'not a readable checkpoint (pop from empty list)', or '(101)'."""
    path = tmp_path / "docsam.pth"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(CheckpointError) as error:
        read_state_dict(path)

    assert str(error.value) == f"{path}: not a readable checkpoint (not a PyTorch or safetensors checkpoint)"


def test_a_git_lfs_pointer_in_the_weights_place_is_named_as_such(tmp_path) -> None:
    """A model repository cloned without git-lfs (the MiniLM or Mask2Former folder `train` takes) holds
    pointers in its files' place: 'not a readable checkpoint (not a PyTorch or safetensors checkpoint)'."""
    path = tmp_path / "all-MiniLM-L6-v2" / "model.safetensors"
    path.parent.mkdir()
    path.write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db\nsize 90868376\n",
        encoding="utf-8",
    )

    with pytest.raises(CheckpointError) as error:
        read_state_dict(path)

    assert str(error.value) == (
        f"{path}: not a readable checkpoint (a Git LFS pointer, not the weights it stands for: a repository "
        "cloned without git-lfs; run `git lfs pull` in it, or download the file itself)"
    )


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "model_state_dict"])
def test_weights_saved_inside_a_training_dict_are_found(tmp_path, wrapper) -> None:
    state = {"w": torch.arange(6.0)}
    path = tmp_path / "run.pth"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}, wrapper: state}, path)
    assert torch.equal(read_state_dict(path)["w"], state["w"])


def test_a_dict_that_is_no_state_dict_is_refused_saying_what_it_holds(tmp_path) -> None:
    path = tmp_path / "run.pth"
    torch.save({"epoch": 3, "net": {"w": torch.zeros(1)}}, path)
    with pytest.raises(
        CheckpointError,
        match=r"not a state dict of tensors \(a dict whose entries are not all "
        r"tensors: epoch, net\)$",
    ):
        read_state_dict(path)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(CheckpointError, match=r"list\.pth: not a state dict of tensors \(it holds a list\)$"):
        read_state_dict(listed)
    with pytest.raises(CheckpointError, match=rf"^{tmp_path}: a folder, not a checkpoint file$"):
        read_state_dict(tmp_path)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_saved_weights_get_a_new_files_permissions(tmp_path, tiny_model, umask, mode):
    """0666 less the umask, as every file docsam writes (README "Runs, failures, messages"), not the 0600 of
    a `tempfile.mkstemp` temporary; also when the file is overwritten."""
    import os
    import stat

    path = tmp_path / "model.safetensors"
    previous = os.umask(umask)
    try:
        save_model(tiny_model, path)
        save_model(tiny_model, path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert [entry.name for entry in tmp_path.iterdir()] == [path.name]  # no temporary left


def test_the_file_is_flushed_to_disk_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    import os

    from model.checkpoint import write_safetensors

    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(descriptor: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        fsync(descriptor)

    def recording_replace(source, target) -> None:
        events.append(("replace", str(source)))
        replace(source, target)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    write_safetensors({"w": torch.zeros(3)}, tmp_path / "w.safetensors")
    assert [kind for kind, _ in events] == ["fsync", "replace"]
    assert events[0][1] == events[1][1]  # the temporary itself, before it becomes the file


def test_classes_and_dataset_name_travel_with_the_weights(tmp_path, tiny_model, tiny_config):
    from model.checkpoint import StoredClasses, stored_classes

    path = tmp_path / "finetuned.safetensors"
    save_model(tiny_model, path, classes=["heading", "paragraph"], dataset="Newspapers")
    assert stored_classes(path) == StoredClasses(("heading", "paragraph"), "Newspapers")
    assert load_model(path).config == tiny_config  # the config is still there
    save_model(tiny_model, path, classes=["heading"])
    assert stored_classes(path) == StoredClasses(("heading",), None)
    save_model(tiny_model, path)
    assert stored_classes(path) is None
    torch.save(tiny_model.state_dict(), tmp_path / "official.pth")
    assert stored_classes(tmp_path / "official.pth") is None
    with pytest.raises(ValueError, match="distinct"):
        save_model(tiny_model, path, classes=["a", "a"])


@pytest.mark.parametrize("stored", ["not json", '"heading"', "[]", '["a", "a"]', '["a", 3]'])
def test_unusable_stored_classes_are_refused_naming_the_file(tmp_path, stored):
    from model.checkpoint import stored_classes

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"docsam_classes": stored})
    with pytest.raises(CheckpointError, match=rf"^{path}: its stored class names are not"):
        stored_classes(path)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b'{"w": nonsense}', "invalid JSON in header"),
        (b'{"__metadata__": {"docsam_classes": 5}}', "expected a string"),  # metadata holds strings only
        (b'{"w": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}}', "unknown variant `Q9`"),
    ],
)
def test_a_safetensors_header_its_reader_refuses_is_a_checkpoint_error_naming_the_file(
    tmp_path, header, reason
):
    """`docsam segment` without --classes reads the classes the weights carry from the header alone: a
    header safetensors refuses (a file written by another tool, or edited) must be the one-line error
    naming the file that a usage error prints, not safetensors' own exception (a traceback)."""
    from model.checkpoint import stored_classes

    path = tmp_path / "w.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    with pytest.raises(
        CheckpointError, match=rf"^{re.escape(str(path))}: not a readable checkpoint \(.*{reason}"
    ):
        stored_classes(path)


def test_the_keep_size_rule_travels_with_the_weights(tmp_path, tiny_model):
    from model.checkpoint import stored_keep_size

    path = tmp_path / "w.safetensors"
    for keep_size in (True, False, None):  # None: files written before it was stored say nothing
        save_model(tiny_model, path, keep_size=keep_size)
        assert stored_keep_size(path) is keep_size


def test_the_short_range_travels_with_the_weights(tmp_path, tiny_model):
    from model.checkpoint import stored_short_range

    path = tmp_path / "w.safetensors"
    for short_range in ((700, 900), (512, 512), None):  # None: files written before it was stored say nothing
        save_model(tiny_model, path, short_range=short_range)
        assert stored_short_range(path) == short_range


@pytest.mark.parametrize("stored", ["not json", "800", "[900, 700]", "[0, 800]", "[700.5, 900]"])
def test_an_unusable_stored_short_range_is_refused_naming_the_file(tmp_path, stored):
    from model.checkpoint import stored_short_range

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"docsam_short_range": stored})
    with pytest.raises(CheckpointError, match=rf"^{path}: its stored short-side range is not"):
        stored_short_range(path)


@pytest.mark.parametrize("stored", ["not json", '"true"', "1", "[true]"])
def test_an_unusable_stored_keep_size_flag_is_refused_naming_the_file(tmp_path, stored):
    from model.checkpoint import stored_keep_size

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"docsam_keep_size": stored})
    with pytest.raises(CheckpointError, match=rf"^{path}: its stored keep-size flag is not"):
        stored_keep_size(path)


def test_reading_the_stored_classes_does_not_import_torch(tmp_path, tiny_model):
    import subprocess
    import sys

    path = tmp_path / "finetuned.safetensors"
    save_model(tiny_model, path, classes=["heading", "paragraph"], dataset="Newspapers")
    code = (
        "import sys; from model.checkpoint import stored_classes; "
        f"print(stored_classes({str(path)!r}).classes, 'torch' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[1]
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert completed.stdout.split() == ["('heading',", "'paragraph')", "False"]


def test_a_pth_damaged_inside_its_tensor_data_is_refused_naming_the_file(tmp_path):
    """torch.load does not check the CRC-32 each archive member carries: a `.pth` damaged in copying (a bad
    disk, an interrupted transfer resumed against another file) loaded other weights without a word."""
    path = tmp_path / "docsam.pth"
    torch.save({"weight": torch.arange(4096, dtype=torch.float32)}, path)
    data = bytearray(path.read_bytes())
    offset = data.index(torch.arange(4096, dtype=torch.float32).numpy().tobytes()) + 8000
    data[offset : offset + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))

    with pytest.raises(CheckpointError) as error:
        read_state_dict(path)

    message = str(error.value)
    assert message.startswith(f"{path}: damaged (Bad CRC-32") and "\n" not in message


def test_a_pth_whose_members_overlap_is_refused_without_reading_them(tmp_path):
    """A zip archive can list one member's data many times over (a zip bomb; the Python docsam runs on may
    not refuse overlapping members): the CRC-32 check read each in full, 2 GB for a 1 MB file of 2000
    entries, hours for a 100 MB one of a million, before torch refused the file. Such a file is now damaged,
    in one line, before any member is read."""
    import io
    import struct
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/data/0", bytes(1 << 20))
    data = buffer.getvalue()
    directory, end = data.index(b"PK\x01\x02"), data.rindex(b"PK\x05\x06")
    entry = data[data.index(b"PK\x01\x02", directory + 4) : end]  # the 1 MB member's, listed 2000 times more
    entries = data[directory:end] + entry * 2000
    record = bytearray(data[end:])
    record[8:12] = struct.pack("<HH", 2002, 2002)
    record[12:16] = struct.pack("<I", len(entries))
    path = tmp_path / "bomb.pth"
    path.write_bytes(data[:directory] + entries + bytes(record))

    with pytest.raises(CheckpointError) as error:
        read_state_dict(path)

    assert str(error.value).startswith(
        f"{path}: damaged (its members overlap: their data add up to {2001 * (1 << 20) + 6} bytes, the file "
        f"holds {path.stat().st_size}); copy the file again from its source"
    )


@pytest.mark.parametrize("kept", [0.5, 0.999, 0.0001, 0.0])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_file_cut_off_in_copying_is_refused_in_one_line_naming_the_file(tmp_path, suffix, kept) -> None:
    """A `.pth` cut off (a copy or download stopped half-way) was 'not a readable checkpoint
    (PytorchStreamReader failed reading zip archive: failed finding central directory. This is an internal
    miniz error. If you are seeing this error, ...)', a safetensors file 'incomplete metadata, file not fully
    covered', or, cut inside its header, 'not a PyTorch or safetensors checkpoint'."""
    whole = tmp_path / f"whole{suffix}"
    state = {f"w{index}": torch.arange(4096.0) for index in range(40)}
    if suffix == ".pth":
        torch.save(state, whole)
    else:
        save_file(state, str(whole))
    data = whole.read_bytes()
    path = tmp_path / f"docsam{suffix}"
    path.write_bytes(data[: int(len(data) * kept)])

    for read in (read_state_dict, stored_metadata):  # segment reads the stored classes first
        with pytest.raises(CheckpointError) as error:
            read(path)
        message = str(error.value)
        assert message.startswith(f"{path}: damaged (") and "\n" not in message
        assert message.endswith("); copy the file again from its source")
        assert "cut off" in message or "empty" in message


def test_a_safetensors_file_longer_than_its_header_says_is_refused_in_one_line_naming_the_file(tmp_path):
    """Bytes after the tensors (a download resumed from the start into the same file) gave safetensors'
    'incomplete metadata, file not fully covered', as for a file cut off."""
    path = tmp_path / "docsam.safetensors"
    save_file({"w": torch.arange(16.0)}, str(path), metadata={"classes": "text"})
    size = path.stat().st_size
    path.write_bytes(path.read_bytes() + bytes(100))

    for read in (read_state_dict, stored_metadata):
        with pytest.raises(CheckpointError) as error:
            read(path)
        assert str(error.value) == (
            f"{path}: damaged (100 bytes more than the {size} its safetensors header describes); copy the "
            "file again from its source"
        )


def test_weights_of_another_architecture_are_refused_naming_the_sizes_that_differ(tiny_config):
    """Weights that do not fit the architecture given (`--model-config`, `--variant`) or detected were refused
    with hundreds of internal entry names only; the message now says which config sizes differ."""
    other = replace(
        tiny_config,
        backbone=replace(tiny_config.backbone, depths=(2, 2, 4, 2), window_size=7),
        num_queries=24,
        decoder_layers=2,
    )
    with torch.device("meta"):
        model, weights = DocSAM(tiny_config), DocSAM(other)

    with pytest.raises(CheckpointError) as error:
        load_weights(model, to_reference_keys(weights.state_dict()), "other.pth")

    message = str(error.value)
    assert message.startswith(
        "other.pth: does not fit the model (the weights' depths [2, 2, 4, 2], window_size 7, "
        "num_queries 24, decoder_layers 2 against the architecture's [2, 2, 2, 2], 5, 40, 4; missing: "
    )


@pytest.mark.parametrize("command", ["segment", "finetune"])
def test_a_stored_config_larger_than_the_weights_is_refused_before_its_memory_is_allocated(
    tmp_path, tiny_model, command
):
    """A safetensors file can store any config beside its tensors (a stranger's weights, or a file made to
    exhaust the machine): a text vocabulary of 10^12 words made `segment`, `evaluate` and `finetune` build
    the model it describes before comparing it with the weights, asking for 1.5 PB (a RuntimeError of torch's
    allocator, reported as a bug; a few hundred GB can pass the kernel's check and bring the OOM killer).
    The architecture is now checked against the weights on the meta device first, and the file refused as
    weights of another architecture are."""
    from docsam_cli.training.build import model_from_checkpoint
    from docsam_cli.training.settings import Regularisation

    config = tiny_model.config.to_dict()
    config["text_encoder_config"]["vocab_size"] = 10**12
    path = tmp_path / "hostile.safetensors"
    save_file(dict(tiny_model.state_dict()), str(path), metadata={"docsam_config": json.dumps(config)})
    with pytest.raises(
        CheckpointError, match=r"hostile\.safetensors: does not fit the model \(.*1000000000000"
    ):
        if command == "segment":
            load_model(path)
        else:
            model_from_checkpoint(path, Regularisation())


@pytest.mark.parametrize("width", [2**64, 2**62])
def test_a_config_of_sizes_torch_cannot_hold_is_refused_naming_the_file(tmp_path, tiny_model, width):
    """A config passes its field checks with any positive width, but torch holds no dimension of 2^64
    ('TypeError: empty(): ... Overflow when unpacking long long', with a C++ stack of 16 frames in its
    message) and no weight of 2^63 bytes or more ('RuntimeError: Storage size calculation overflowed'):
    `segment --model-config`, or weights storing such a config, ended as an internal error, exit 3. The
    file is now refused, on one line naming it."""
    config = tiny_model.config.to_dict()
    config["mask2former_config"]["encoder_feedforward_dim"] = width
    path = tmp_path / "hostile.safetensors"
    save_file(dict(tiny_model.state_dict()), str(path), metadata={"docsam_config": json.dumps(config)})
    with pytest.raises(
        CheckpointError, match=r"hostile\.safetensors: an architecture of sizes torch cannot hold"
    ) as caught:
        load_model(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("section", "name", "value", "reason"),
    [
        (
            "mask2former_config",
            "encoder_feedforward_dim",
            2**64,
            "(mask2former_config.encoder_feedforward_dim 18446744073709551616 > 2^63 - 1)",
        ),
        # Each size holdable, the relative position table's (2 x 2^32 - 1)^2 not: torch's own words.
        (
            "swin_backbone_config",
            "window_size",
            2**32,
            "(zeros(): argument 'size' failed to unpack the object at pos 1 with error Overflow when "
            "unpacking long long)",
        ),
    ],
)
def test_the_reason_torch_cannot_hold_an_architecture_is_clean(
    tmp_path, tiny_model, section, name, value, reason
):
    """The reason kept the first line of torch's message, which opens a quote that only its C++ stack, cut
    off, closes: '(empty(): argument 'size' failed to unpack the object at pos 1 with error "Overflow when
    unpacking long long)'. A value no torch size holds is named by its key in the config instead; torch's
    own words, where they are the reason, come without the stray quote."""
    config = tiny_model.config.to_dict()
    config[section][name] = value
    path = tmp_path / "hostile.safetensors"
    save_file(dict(tiny_model.state_dict()), str(path), metadata={"docsam_config": json.dumps(config)})
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    assert str(caught.value) == f"{path}: an architecture of sizes torch cannot hold {reason}"


@pytest.mark.parametrize("where", ["header", "docsam_config", "docsam_classes", "docsam_patch"])
def test_json_nested_too_deeply_in_a_safetensors_file_is_refused_naming_it(tmp_path, where):
    """A safetensors header, or a config, class list or window stored in one, nested deeper than Python's
    JSON reader goes (a stranger's file, or one made to break readers) ended `segment`, `evaluate` and
    `finetune` as an internal error, 'a bug' with exit 3 ('RecursionError: maximum recursion depth
    exceeded while decoding a JSON array'); the file is now refused as any unreadable checkpoint is."""
    from model.checkpoint import stored_classes, stored_patch

    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / "deep.safetensors"
    if where == "header":
        header = f'{{"a": {deep}}}'.encode()
        path.write_bytes(len(header).to_bytes(8, "little") + header)
    else:
        save_file({"w": torch.zeros(1)}, str(path), metadata={where: deep})
    read = {"docsam_classes": stored_classes, "docsam_patch": stored_patch}.get(where, load_model)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: "):
        read(path)


def test_the_same_weights_and_metadata_write_the_same_bytes(tmp_path) -> None:
    """safetensors writes the metadata in an order drawn at random for each write: a resumed run's
    weights, or a download stored again, differed from the same weights written before in bytes and sha256
    (the metadata's keys in another order)."""
    state = {"w": torch.arange(6, dtype=torch.float32)}
    metadata = {f"key_{index}": f"välue {index}\n" for index in range(8)}
    written = []
    for attempt in range(4):
        path = tmp_path / f"{attempt}.safetensors"
        write_safetensors(state, path, metadata)
        written.append(path.read_bytes())
        with safe_open(path, "pt") as stored:
            assert stored.metadata() == metadata and torch.equal(stored.get_tensor("w"), state["w"])
    assert written[1:] == written[:1] * 3
