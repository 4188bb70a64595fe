"""The weights registry, cache and `resolve_weights`; `download-weights --from` and usage. No network."""

from __future__ import annotations

import errno
import json
import os
import pwd
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from cli_helpers import run_docsam
from safetensors.torch import load_file
from typer.testing import CliRunner
from weights_fake_remote import Sandbox, checkpoint, make_sandbox, pth_bytes, safetensors_bytes

import docsam_cli.weights.install
from docsam_cli.app import app
from docsam_cli.presets import PRESETS, checkpoint_preset
from docsam_cli.runtime import GeometryOptions
from docsam_cli.weights import REGISTRY, find_entry, resolve_weights
from docsam_cli.weights.cache import docsam_home, read_record
from docsam_cli.weights.errors import CorruptCacheError, NotCachedError, UnknownWeightsError, WeightsError
from docsam_cli.weights.registry import MASK2FORMER_LICENCE, DriveSource, HubSource
from model.checkpoint import StoredClasses, stored_classes, stored_keep_size, stored_patch
from model.inference import Geometry


@pytest.fixture(autouse=True)
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    sandbox = make_sandbox(tmp_path, monkeypatch)
    yield sandbox
    assert not sandbox.blocked, f"the test tried to reach a remote host: {sandbox.blocked}"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["download-weights", *args])
    return result.exit_code, result.stderr


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_registry_covers_the_model_zoo_and_the_hub_initialisations() -> None:
    names = [entry.name for entry in REGISTRY]
    assert len(names) == len(set(names)) == 11
    zoo = [entry for entry in REGISTRY if isinstance(entry.source, DriveSource)]
    assert [entry.name for entry in zoo] == [
        "docsam-base",
        "docsam-large",
        "docsam-large-keepsize",
        "docsam-large-m6doc",
        "docsam-large-doclaynet",
        "docsam-large-scut-cab",
        "docsam-large-ctw1500",
        "docsam-large-totaltext",
    ]
    assert all(entry.licence == "no explicit licence" for entry in zoo)
    # MODELZOO's table and scripts disagree about the keep-size model: only the file tells.
    assert {entry.name: entry.variant for entry in zoo if entry.variant not in ("base", "large")} == {
        "docsam-large-keepsize": None
    }
    assert all(len(entry.source.file_id) == 33 and entry.source.filename.endswith(".pth") for entry in zoo)
    assert [entry.name for entry in REGISTRY if entry.keep_size] == ["docsam-large-keepsize"]
    hub = {entry.source.repo_id: entry for entry in REGISTRY if isinstance(entry.source, HubSource)}
    assert (
        hub["facebook/mask2former-swin-base-coco-panoptic"].licence == MASK2FORMER_LICENCE == "CC BY-NC 4.0"
    )
    assert hub["facebook/mask2former-swin-large-coco-panoptic"].variant == "large"
    assert hub["sentence-transformers/all-MiniLM-L6-v2"].sha256 is not None


def test_names_are_found_by_alias_and_case_insensitively() -> None:
    assert find_entry("docsam_large_m6doc").name == "docsam-large-m6doc"  # the reference file's stem
    assert find_entry("DocSAM-Base").name == "docsam-base"
    assert find_entry("sentence-transformers/all-MiniLM-L6-v2").name == "all-minilm-l6-v2"
    assert find_entry("docsam-huge") is None


def test_cache_lives_in_docsam_home_or_under_the_home_cache(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert docsam_home() == sandbox.home
    monkeypatch.delenv("DOCSAM_HOME")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert docsam_home() == tmp_path / "user" / ".cache" / "docsam"


@pytest.mark.parametrize("ignored", ["scratch/cache", ""], ids=["relative", "empty"])
def test_the_cache_follows_xdg_cache_home_when_it_is_absolute(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ignored: str
) -> None:
    """A cluster's users point XDG_CACHE_HOME at scratch space when the home quota cannot take 1.3 GB (the
    Hugging Face cache follows it too); the XDG spec ignores a relative or empty value."""
    monkeypatch.delenv("DOCSAM_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "scratch"))
    assert docsam_home() == tmp_path / "scratch" / "docsam"
    monkeypatch.setenv("XDG_CACHE_HOME", ignored)
    assert docsam_home() == tmp_path / "user" / ".cache" / "docsam"
    monkeypatch.setenv("DOCSAM_HOME", str(sandbox.home))
    assert docsam_home() == sandbox.home


@pytest.mark.parametrize("home", [None, ""], ids=["unset", "empty"])
def test_a_user_without_a_home_is_told_to_set_docsam_home(monkeypatch: pytest.MonkeyPatch, home: str | None):
    """A container run under an arbitrary uid (OpenShift), HOME unset: the cache's folder was looked up in
    the password database, which does not know the user, and `segment` with a zoo name or
    `download-weights --list` ended as an internal error (RuntimeError: Could not determine home
    directory). An empty HOME put the cache at /.cache."""

    def unknown_user(uid: int) -> None:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("DOCSAM_HOME")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    if home is None:
        monkeypatch.delenv("HOME", raising=False)
    else:
        monkeypatch.setenv("HOME", home)
    monkeypatch.setattr(pwd, "getpwuid", unknown_user)
    with pytest.raises(WeightsError, match=r"HOME is not set .*; set DOCSAM_HOME \(or XDG_CACHE_HOME\)"):
        resolve_weights("docsam-base")
    code, stderr = run("--list")
    assert code == 2 and stderr.startswith("error: the weights cache has no folder: HOME is not set"), stderr


def test_an_empty_home_is_unset_not_the_root_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """`HOME= docsam ...` (a service that sets it empty) put the cache at /.cache, and `~` of a path at /;
    like an unset HOME it now means the user's folder in the password database."""
    monkeypatch.delenv("DOCSAM_HOME")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", "")
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert docsam_home() == home / ".cache" / "docsam"
    monkeypatch.setenv("DOCSAM_HOME", "~/models")
    assert docsam_home() == home / "models"


def damaged(archive: bytes) -> bytes:
    """A zip-format `.pth` with one byte of its last tensor's data changed (the layout still loads)."""
    middle = len(archive) - 4096  # inside the filler tensor, before the zip directory
    return archive[:middle] + bytes([archive[middle] ^ 0xFF]) + archive[middle + 1 :]


def test_an_existing_file_resolves_as_is(tmp_path: Path) -> None:
    path = write(tmp_path / "mine.pth", pth_bytes(checkpoint()))
    resolved = resolve_weights(str(path))
    assert resolved.path == path and resolved.entry is None


def test_a_run_folder_resolves_to_its_model_file(tmp_path: Path) -> None:
    model_file = write(tmp_path / "model.safetensors", safetensors_bytes(checkpoint()))
    assert resolve_weights(str(tmp_path)).path == model_file
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UnknownWeightsError, match=r"empty: a folder without model\.safetensors or pytorch_"):
        resolve_weights(str(empty))


def test_an_unfinished_run_folder_names_the_weights_it_holds(tmp_path: Path) -> None:
    """A finetune run still going, or interrupted (exit 130, 'continue with --resume'), has no final
    model.safetensors yet; `segment --weights runs/news` and `evaluate --weights` said only 'a folder
    without model.safetensors ... (a docsam run's or checkpoint's folder holds one)', of a docsam run's
    folder. The error now says so and names its best/ and newest checkpoint, which hold weights."""
    run = tmp_path / "news"
    for folder in ("checkpoints/step-00000002", "checkpoints/step-00000010", "best"):
        (run / folder).mkdir(parents=True)
        write(run / folder / "model.safetensors", safetensors_bytes(checkpoint()))
    (run / "checkpoints" / "step-00000012").mkdir()  # a checkpoint without weights is no choice
    expected = (
        f"news: a folder without model.safetensors or pytorch_model.bin: a training run's folder without its "
        f"final weights (still running, or interrupted); give one of its weight folders instead, such as "
        f"{run / 'best'}, {run / 'checkpoints' / 'step-00000010'}"
    )
    with pytest.raises(UnknownWeightsError, match=re.escape(expected)):
        resolve_weights(str(run))
    assert resolve_weights(str(run / "best")).path == run / "best" / "model.safetensors"


def test_unknown_names_and_missing_files_are_told_apart() -> None:
    with pytest.raises(
        UnknownWeightsError, match=r"docsam-huge: not a weights file nor a known name \(docsam-base"
    ):
        resolve_weights("docsam-huge")
    with pytest.raises(UnknownWeightsError, match="no such weights file"):
        resolve_weights("runs/best.pth")
    with pytest.raises(UnknownWeightsError, match="runs/best: no such weights file"):
        resolve_weights("runs/best")  # a path without a suffix: a folder or file not there, no name
    with pytest.raises(UnknownWeightsError, match="--weights: an empty name"):
        resolve_weights(" ")  # an unset variable, not the current folder ("a folder without model...")


def test_a_link_to_weights_that_are_gone_is_named_a_broken_link(tmp_path: Path) -> None:
    """--weights LINK whose target is gone (a USB drive or share not mounted) said 'LINK: no such weights
    file', of a file `ls` lists; page inputs already say 'broken symbolic link'."""
    link = tmp_path / "docsam.safetensors"
    link.symlink_to("/mnt/usb/docsam.safetensors")
    with pytest.raises(
        UnknownWeightsError, match=rf"^{link}: broken symbolic link \(to /mnt/usb/docsam.safetensors\)$"
    ):
        resolve_weights(str(link))


def test_download_weights_from_a_link_to_weights_that_are_gone_is_named_a_broken_link(tmp_path: Path) -> None:
    """`download-weights --from LINK` whose target is gone said 'LINK: no such file', of a file `ls` lists,
    where --weights LINK names the link and its target."""
    link = tmp_path / "docsam.pth"
    link.symlink_to("/mnt/usb/docsam.pth")
    code, stderr = run("--from", str(link), "docsam-base")
    assert code == 1
    assert stderr.splitlines() == [f"error: {link}: broken symbolic link (to /mnt/usb/docsam.pth)"]


def test_a_registered_name_not_yet_downloaded_names_the_command_to_fetch_it() -> None:
    with pytest.raises(NotCachedError, match="fetch it with `docsam download-weights docsam-large-keepsize`"):
        resolve_weights("docsam_large_all_dataset_keepsize")


@pytest.mark.parametrize("variant", [None, "large"])
def test_a_name_not_downloaded_gets_no_variant_advice_unless_another_variant_is_asked_for(
    variant: str | None,
) -> None:
    """The advice to fetch the weights of the variant asked for is for `--variant base` with the default
    docsam-large only: without --variant, or with the variant of the weights named, it would send the user
    to other weights than those asked for."""
    with pytest.raises(NotCachedError) as caught:
        resolve_weights("docsam-large", variant)
    assert str(caught.value).endswith("fetch it with `docsam download-weights docsam-large`")


def test_variant_base_without_downloaded_weights_names_the_base_weights(tmp_path: Path) -> None:
    """`docsam segment scans --variant base` with nothing downloaded said to fetch docsam-large, the default
    weights: 1.3 GB of the large model, which `--variant base` then cannot load."""
    page = write(tmp_path / "page.png", b"not read: the weights are looked up first")
    args = [
        "segment",
        str(page),
        "--out",
        str(tmp_path / "out"),
        "--variant",
        "base",
    ]  # docsam-large by default

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert message.startswith("error: docsam-large: not downloaded yet")
    assert "--variant base asks for the base model, whose weights are docsam-base:" in message
    assert "`docsam download-weights docsam-base`, then --weights docsam-base" in message


def test_from_registers_a_hand_copied_pth_as_verified_safetensors(tmp_path: Path) -> None:
    copied = write(tmp_path / "docsam_large_all_dataset_keepsize.pth", pth_bytes(checkpoint(width=192)))

    code, stderr = run("--from", str(copied), "docsam-large-keepsize")

    assert code == 0, stderr
    resolved = resolve_weights("docsam-large-keepsize")
    assert resolved.keep_size and stored_keep_size(resolved.path)  # `--weights FILE` keeps the size too
    assert resolved.path.suffix == ".safetensors"
    assert all(
        torch.equal(load_file(resolved.path)[key], value) for key, value in checkpoint(width=192).items()
    )
    record = read_record("docsam-large-keepsize")
    assert record.source == f"file:{copied.resolve()}" and record.sha256 == resolved.sha256
    listing = CliRunner().invoke(app, ["download-weights", "--list"]).stdout
    row = next(line for line in listing.splitlines() if line.startswith("docsam-large-keepsize "))
    assert "local file (--from)" in row and "Google Drive" not in row and row.split()[-1] == "yes"


def test_an_installed_zoo_model_carries_the_classes_it_was_fine_tuned_on(tmp_path: Path) -> None:
    """The file `download-weights` installs stores the registry's classes, dataset name and window, as
    `docsam train` does: `segment --weights FILE`, under any name, then prompts with them, not with
    PubLayNet's, and cuts the fine-tuned models' 800-px windows."""
    copied = write(tmp_path / "docsam_large_doclaynet.pth", pth_bytes(checkpoint(width=192)))
    assert run("--from", str(copied), "docsam-large-doclaynet")[0] == 0
    moved = tmp_path / "doclaynet-model.safetensors"
    shutil.copyfile(resolve_weights("docsam-large-doclaynet").path, moved)
    broken = write(tmp_path / "broken.png", b"not an image")  # classes are chosen before any page loads

    args = ["segment", str(broken), "--weights", str(moved), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 1, result.stderr
    assert stored_classes(moved) == StoredClasses(PRESETS["doclaynet"].classes, "DocLayNet DocLayNet_core")
    classes = json.loads((tmp_path / "out" / ".docsam" / "classes.json").read_text())
    assert classes == list(PRESETS["doclaynet"].classes)
    assert stored_patch(moved) == (800, 800)
    assert run("--from", str(copied), "docsam-large-m6doc")[0] == 0  # classes unknown: none stored
    assert stored_classes(resolve_weights("docsam-large-m6doc").path) is None
    assert stored_patch(resolve_weights("docsam-large-m6doc").path) == (800, 800)


@pytest.mark.parametrize("name", ["docsam_large_doclaynet.pth", "docsam-large-doclaynet.safetensors"])
def test_a_zoo_file_without_a_stored_window_gets_the_registry_window_as_its_classes(
    tmp_path: Path, name: str
) -> None:
    """A fine-tuned zoo model given by path, as published (`.pth`) or as an older `download-weights`
    installed it (no window stored), is known by its name: its 800-px windows with its classes, not 640-px
    windows with DocLayNet's classes."""
    state = checkpoint(width=192)
    path = write(tmp_path / name, pth_bytes(state) if name.endswith(".pth") else safetensors_bytes(state))
    weights = resolve_weights(str(path))
    preset = checkpoint_preset(path)
    assert preset is not None and preset.classes == PRESETS["doclaynet"].classes
    assert weights.patch == (800, 800)
    assert GeometryOptions.parse().resolve(weights).patch == (800, 800)


@pytest.mark.parametrize("name", ["docsam-large-keepsize", "docsam_large_all_dataset_keepsize.pth"])
def test_the_keep_size_model_given_by_path_keeps_its_rule(tmp_path: Path, name: str) -> None:
    """The keep-size checkpoint by path, as OCR-D's resource locations give it (`ocrd resmgr`, -L) or as
    published: pages kept near their size (short side 640-1280), as by its zoo name, not resized to 800."""
    path = write(tmp_path / name, pth_bytes(checkpoint(width=192)))
    geometry = GeometryOptions.parse().resolve(resolve_weights(str(path)))
    assert geometry == Geometry.keep_size_default()


@pytest.mark.parametrize(
    ("name", "width", "note"),
    [
        ("docsam-large-keepsize", 128, None),
        ("docsam-base", 192, "docsam-base: copied.pth holds the large variant, not the base one listed"),
    ],
)
def test_a_file_of_another_variant_is_stored_and_loaded_as_the_variant_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, width: int, note: str | None
) -> None:
    """MODELZOO lists the keep-size model as Swin-B, its scripts run it as large: the file decides, at
    install and at load; the registry's variant never overrides what the checkpoint is."""
    import model
    from docsam_cli.runtime import ModelSpec, resolve_model

    copied = write(tmp_path / "copied.pth", pth_bytes(checkpoint(width=width)))
    code, stderr = run("--from", str(copied), name)
    assert code == 0, stderr
    assert (note in stderr) if note else " holds the " not in stderr
    loads: list[str | None] = []
    monkeypatch.setattr(model, "load_model", lambda path, variant, config, device: loads.append(variant))
    resolve_model(ModelSpec(weights=name, device="cpu")).load()
    assert loads == [None]  # detected from the file
    assert (
        model.checkpoint.detect_variant(load_file(resolve_weights(name).path))
        == {128: "base", 192: "large"}[width]
    )


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        (
            "docsam-base",
            pth_bytes(checkpoint(width=96)),
            "copied.bin holds a Swin backbone no variant has (Swin width 96 is none of the variants' "
            "(base 128, large 192))",
        ),
        ("docsam-base", b"<html>Quota exceeded</html>", "not a readable checkpoint"),
        (
            "docsam-base",
            pth_bytes({"encoder.layer.0.weight": torch.zeros(3)}),
            "copied.bin holds no Swin backbone (no patch embedding among its 1 tensors), so it is not these "
            "weights",
        ),
        ("all-minilm-l6-v2", safetensors_bytes({"w": torch.zeros(2)}), "not the published file"),
        (
            "docsam-base",
            damaged(pth_bytes(checkpoint(filler=4096))),
            "copied.bin is damaged (Bad CRC-32 for file 'archive/data/1'); nothing was stored; copy the file "
            "again from its source",
        ),
    ],
    ids=["no-variant", "not-a-checkpoint", "no-backbone", "wrong-digest", "damaged"],
)
def test_from_refuses_files_that_are_not_the_named_weights(
    tmp_path: Path, sandbox: Sandbox, name: str, data: bytes, expected: str
) -> None:
    copied = write(tmp_path / "copied.bin", data)

    code, stderr = run("--from", str(copied), name)

    assert code == 1
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == [
        next(line for line in stderr.splitlines() if expected in line)
    ]
    assert read_record(name) is None and not list((sandbox.home / "weights").rglob("*.safetensors"))


def test_from_a_file_that_is_no_checkpoint_says_why_once(tmp_path: Path) -> None:
    """The line guessed, then said it again in the reader's words: 'docsam-base: copied.bin is not a
    readable checkpoint (truncated or not weights?): /…/copied.bin: not a readable checkpoint (…)'; a cut-off
    file is named as such before."""
    copied = write(tmp_path / "copied.bin", b"Not Found")

    code, stderr = run("--from", str(copied), "docsam-base")

    assert code == 1
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == [
        f"error: docsam-base: {copied}: not a readable checkpoint (not a PyTorch or safetensors checkpoint); "
        "nothing was stored"
    ]


def test_a_stored_file_deleted_by_hand_is_named_gone_not_corrupted(tmp_path: Path) -> None:
    copied = write(tmp_path / "base.pth", pth_bytes(checkpoint()))
    assert run("--from", str(copied), "docsam-base")[0] == 0
    (docsam_home() / "weights" / "docsam-base" / "docsam-base.safetensors").unlink()

    with pytest.raises(
        NotCachedError, match=r"docsam-base: the cached file .* is gone; run `docsam download"
    ):
        resolve_weights("docsam-base")


def test_an_unreadable_cache_record_is_reported_as_corruption(tmp_path: Path) -> None:
    copied = write(tmp_path / "base.pth", pth_bytes(checkpoint()))
    assert run("--from", str(copied), "docsam-base")[0] == 0
    (docsam_home() / "weights" / "docsam-base" / "record.json").write_text("{not json")

    with pytest.raises(
        CorruptCacheError, match=r"unreadable cache record.*docsam download-weights docsam-base"
    ):
        resolve_weights("docsam-base")


def test_an_unusable_cache_folder_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = write(tmp_path / "not-a-folder", b"")
    monkeypatch.setenv("DOCSAM_HOME", str(home))
    copied = write(tmp_path / "base.pth", pth_bytes(checkpoint()))

    code, stderr = run("--from", str(copied), "docsam-base")

    assert code == 1
    assert stderr.startswith(f"error: docsam-base: cannot store the weights in {home} (")
    assert len(stderr.strip().splitlines()) == 1
    with pytest.raises(CorruptCacheError, match=rf"make {home} a readable folder or set DOCSAM_HOME"):
        resolve_weights("docsam-base")


def test_from_a_file_that_cannot_be_read_names_it_and_keeps_the_cached_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--from` a hand copy the user may not read (another account's file, a failing USB stick) blamed the
    cache ("cannot store the weights in DOCSAM_HOME ...; make it a writable folder") and deleted the weights
    already stored under that name."""
    good = write(tmp_path / "base.pth", pth_bytes(checkpoint()))
    assert run("--from", str(good), "docsam-base")[0] == 0
    stored = resolve_weights("docsam-base")
    unreadable = write(tmp_path / "other.pth", pth_bytes(checkpoint(width=192)))
    opened = Path.open

    def refuse(path: Path, *args: object, **kwargs: object) -> object:
        if path == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return opened(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)

    code, stderr = run("--from", str(unreadable), "docsam-base")

    assert code == 1
    assert stderr.splitlines() == [
        f"error: docsam-base: cannot read {unreadable} (Permission denied); nothing was stored"
    ]
    assert resolve_weights("docsam-base") == stored


def test_a_full_disk_while_replacing_stored_weights_keeps_the_stored_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--from` another copy over weights already stored, on a disk too full for the new file: the atomic
    write left the stored file as it was, then the error handling deleted it, so the name no longer
    resolved."""
    good = write(tmp_path / "base.pth", pth_bytes(checkpoint()))
    assert run("--from", str(good), "docsam-base")[0] == 0
    stored = resolve_weights("docsam-base")

    def no_space(state: object, target: Path, metadata: object = None) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(docsam_cli.weights.install, "write_safetensors", no_space)
    other = write(tmp_path / "other.pth", pth_bytes(checkpoint(width=192)))

    code, stderr = run("--from", str(other), "docsam-base")

    assert code == 1 and "no space left" in stderr
    assert resolve_weights("docsam-base") == stored


def test_storing_weights_removes_what_a_killed_store_left_behind(tmp_path: Path) -> None:
    """Converting a 1.3 GB `.pth` holds it twice in memory: a run killed then (the OOM killer, kill -9) left
    its hidden temporary safetensors file, as large as the weights, in the cache for good."""
    folder = docsam_home() / "weights" / "docsam-base"
    folder.mkdir(parents=True)
    leftovers = [folder / ".docsam-base.safetensors.0123abcd.tmp", folder / ".record.json.89abcdef.tmp"]
    for leftover in leftovers:
        leftover.write_bytes(b"half-written")
    copied = write(tmp_path / "base.pth", pth_bytes(checkpoint()))

    assert run("--from", str(copied), "docsam-base")[0] == 0

    assert sorted(path.name for path in folder.iterdir()) == ["docsam-base.safetensors", "record.json"]


KILLED_WRITING_PAST_1MB = (
    "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_DFL); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))"
)
"""A `run_docsam` prelude: the process is killed (SIGXFSZ) as it writes a file past 1 MB, as the OOM killer
or kill -9 stops it at that moment."""


@pytest.mark.slow
def test_storing_weights_removes_the_file_a_store_killed_while_writing_it_left_behind(tmp_path: Path) -> None:
    """safetensors writes the converted weights into a hidden file of its own (`.tmp` and six letters) before
    renaming it into place: a store killed meanwhile left that file, as large as the weights, in the cache
    for good, as storing again removed only docsam's own temporaries."""
    copied = write(tmp_path / "base.pth", pth_bytes(checkpoint(filler=1 << 20)))  # 4 MB
    folder = docsam_home() / "weights" / "docsam-base"

    killed = run_docsam(
        "download-weights", "--from", str(copied), "docsam-base", prelude=KILLED_WRITING_PAST_1MB
    )

    assert killed.returncode == -signal.SIGXFSZ, killed.stderr
    assert any(re.fullmatch(r"\.tmp\w{6}", path.name) for path in folder.iterdir())
    assert run("--from", str(copied), "docsam-base")[0] == 0
    assert sorted(path.name for path in folder.iterdir()) == ["docsam-base.safetensors", "record.json"]


def test_weights_already_in_a_read_only_cache_are_reported_as_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache a site prepared for its users, read-only to them: `download-weights NAME && docsam segment ...`
    (the README's first command) failed with "cannot store the weights" for weights that were there. Taking
    the lock needs write access, which root has anyway: refused here as it is to a user."""
    copied = write(tmp_path / "base.pth", pth_bytes(checkpoint()))
    assert run("--from", str(copied), "docsam-base")[0] == 0

    class ReadOnlyLock:
        def __init__(self, path: str) -> None:
            self.path = path

        def acquire(self, blocking: bool = True) -> None:
            raise PermissionError(13, "Permission denied", self.path)

        def release(self) -> None:
            pass

    monkeypatch.setattr(docsam_cli.weights.install, "FileLock", ReadOnlyLock)

    code, stderr = run("docsam-base")

    assert code == 0, stderr
    assert "docsam-base: already cached" in stderr
    code, stderr = run("docsam-large")  # one that is not there still needs the lock, and says why it failed
    assert code == 1 and stderr.startswith("error: docsam-large: cannot store the weights in")


@pytest.mark.parametrize(
    "url", ["https://mirror.example.org/docsam_base_all_dataset.pth", "file:///srv/base.pth"]
)
def test_from_a_url_says_it_takes_a_file_on_this_machine(url: str) -> None:
    """`--from https://mirror/...` (a site's own copy of the weights) said `https:/mirror/...: no such file`,
    the URL cut as a path, as if a file had gone missing."""
    code, stderr = run("--from", url, "docsam-base")

    assert code == 2
    assert stderr.splitlines() == [
        f"error: --from {url}: a URL; --from takes a file on this machine: download it first (a browser, "
        "curl), then give its path"
    ]


@pytest.mark.parametrize(
    "args",
    [[], ["--list", "docsam-base"], ["--all", "docsam-base"], ["--from", "x.pth"], ["docsam-huge"]],
    ids=["nothing", "list-with-name", "all-with-name", "from-without-name", "unknown-name"],
)
def test_usage_errors_exit_2_with_one_line(args: list[str]) -> None:
    code, stderr = run(*args)
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: ")


@pytest.mark.parametrize(
    ("option", "said"),
    [
        ({}, "variant from the checkpoint"),
        ({"variant": "large"}, "variant large"),
        ({"model_config": Path("configs/tiny.json")}, "architecture of configs/tiny.json"),
    ],
)
def test_verbose_loading_says_where_the_architecture_comes_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, option, said
) -> None:
    """-v said "variant from the checkpoint" also when --model-config gave the architecture."""
    import model
    from docsam_cli.runtime import ModelSpec, ResolvedModel
    from docsam_cli.weights.resolve import ResolvedWeights

    monkeypatch.setattr(model, "load_model", lambda path, variant, config, device: None)
    weights = ResolvedWeights(tmp_path / "weights.pth")
    with caplog.at_level("INFO", logger="docsam_cli.runtime"):
        ResolvedModel(ModelSpec(weights=str(weights.path), device="cpu", **option), weights, None).load()
    assert f"loading {weights.path} ({said}) on cpu, fp32" in caplog.text


@pytest.mark.parametrize("command", ["segment", "evaluate"])
def test_a_model_config_torch_cannot_hold_is_named_not_the_weights(
    tmp_path: Path, tiny_weights: Path, reference_fixtures: Path, command: str
) -> None:
    """`segment --model-config huge.json` (encoder_feedforward_dim 2^64) said 'error: tiny.safetensors: an
    architecture of sizes torch cannot hold (...)', blaming the weights for the architecture that the
    config file gave; the config file is named."""
    from convert_helpers import coco_document, write_image

    data = json.loads((reference_fixtures / "tiny-config.json").read_text())
    data["mask2former_config"]["encoder_feedforward_dim"] = 2**64
    (huge := tmp_path / "huge.json").write_text(json.dumps(data))
    write_image(tmp_path / "a.png", 60, 40, boxes=((10, 10, 40, 30),))
    model = ["--weights", str(tiny_weights), "--model-config", str(huge), "--device", "cpu"]
    if command == "segment":
        arguments = ["segment", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--classes", "text"]
    else:
        (truth := tmp_path / "truth.json").write_text(json.dumps(coco_document()))
        arguments = ["evaluate", str(truth)]
    result = CliRunner().invoke(app, [*arguments, *model])
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    assert said.startswith(f"error: --model-config {huge}: an architecture of sizes torch cannot hold"), said
    assert str(tiny_weights) not in said
