"""`docsam segment` under torchrun: the same outputs as one process, every page once, nothing lost when a
rank is killed. The pieces first (the work queue, what rank 0 shares, what each rank reports), then whole
runs of real `torchrun` processes with the tiny model on the CPU (gloo)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_helpers import PROJECT_ROOT, overridden
from lxml import etree
from PIL import Image
from pycocotools.coco import COCO
from segment_helpers import TINY_GEOMETRY, leftover_temporaries

from docsam_cli.batch_ranks import Ranks, StoreCounters, rank_jsonl_path
from docsam_cli.errors import InputError, UsageError
from docsam_cli.inputs import LoadOptions
from docsam_cli.inputs.tasks import PageTask

TORCHRUN = Path(sys.executable).with_name("torchrun")
RUN_TIMEOUT = 300  # seconds for one launch; the runs below take well under a minute each


# --- the pieces ------------------------------------------------------------------------------------


def test_store_counters_give_each_item_to_one_caller_and_the_faster_caller_takes_more():
    from torch.distributed import HashStore

    store = HashStore()
    work = list(range(60))
    taken: dict[str, list[int]] = {"slow": [], "fast": []}

    def take(name: str, seconds: float) -> None:
        for index, item in StoreCounters(store, "run-1/").claim(work):
            assert index == item
            taken[name].append(index)
            time.sleep(seconds)

    threads = [
        threading.Thread(target=take, args=("slow", 0.02)),
        threading.Thread(target=take, args=("fast", 0.002)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(taken["slow"] + taken["fast"]) == work
    assert len(taken["fast"]) > 2 * len(taken["slow"])
    # Another run's counters (another prefix) start again from the first item.
    assert next(StoreCounters(store, "run-2/").claim(work)) == (0, 0)


def test_without_a_process_group_ranks_exchange_through_the_store():
    """`segment`'s processes have no process group (no collective threads to outlive the run): `gather` and
    `from_main` go through the launcher's store, and rank 0 leaves each only once every rank has read it
    (under srun the store lives in rank 0's process)."""
    from torch.distributed import HashStore

    from docsam_cli.distributed import Distributed

    store = HashStore()
    results: dict[int, tuple] = {}

    def rank(number: int) -> None:
        ranks = Distributed(number, 2, store=store, process_group=False)
        work = ranks.from_main(["page1", "page2"] if number == 0 else None)
        results[number] = (work, ranks.gather(f"rank {number} done"))

    threads = [threading.Thread(target=rank, args=(number,), daemon=True) for number in (0, 1)]
    threads[0].start()
    time.sleep(0.5)
    # Rank 1 has not read rank 0's value yet: rank 0 waits for it, it has not gone on to the gather.
    assert threads[0].is_alive() and not store.check(["docsam/attempt-0/exchange-1/0"])
    threads[1].start()
    for thread in threads:
        thread.join(timeout=30)
    assert results[0] == results[1] == (["page1", "page2"], ["rank 0 done", "rank 1 done"])


@pytest.fixture
def quick_beats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beats every 0.05 s, a process silent for 0.5 s taken as gone (120 s in a run)."""
    import docsam_cli.distributed

    monkeypatch.setattr(docsam_cli.distributed, "HEARTBEAT_SECONDS", 0.05)
    monkeypatch.setattr(docsam_cli.distributed, "SILENCE_LIMIT_SECONDS", 0.5)
    monkeypatch.setattr(docsam_cli.distributed, "FAILURE_LINGER_SECONDS", 0.5)


def beating_rank(rank: int, world_size: int, store):
    from docsam_cli.distributed import Distributed, Heartbeat, beats_key

    heartbeat = Heartbeat(store, beats_key(rank)).start()
    return Distributed(rank, world_size, store=store, process_group=False, heartbeat=heartbeat)


def test_a_rank_killed_outright_stops_the_others_not_after_hours(quick_beats):
    """Rank 2 of three dies without a word (SIGKILL, out of memory: no report): the ranks waiting for it
    see its beats stop, and all of them stop with the same message (under srun nothing else would stop
    them before the store's timeout, hours)."""
    from torch.distributed import HashStore

    store = HashStore()
    stopped: dict[int, str] = {}

    def wait_for_everyone(rank: int) -> None:
        ranks = beating_rank(rank, 3, store)
        try:
            ranks.gather(f"rank {rank} done")
        except UsageError as error:
            stopped[rank] = str(error)
        finally:
            ranks.close()

    started = time.monotonic()
    threads = [threading.Thread(target=wait_for_everyone, args=(rank,), daemon=True) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert time.monotonic() - started < 10
    assert set(stopped) == {0, 1} and stopped[0] == stopped[1]
    assert stopped[0].startswith("rank 2 stopped answering: no sign of life for")


def test_a_slow_rank_that_beats_is_waited_for(quick_beats):
    """A rank that takes three times the silence limit to come to an exchange, beating all along, is
    awaited: only silence stops a run."""
    from torch.distributed import HashStore

    store = HashStore()
    results: dict[int, list] = {}

    def rank(number: int, delay: float) -> None:
        ranks = beating_rank(number, 2, store)
        time.sleep(delay)
        results[number] = ranks.gather(number)
        ranks.close()

    threads = [
        threading.Thread(target=rank, args=(number, delay), daemon=True)
        for number, delay in ((0, 0), (1, 1.5))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == {0: [0, 1], 1: [0, 1]}
    assert not store.check(["docsam/attempt-0/failed"])


class TwoRanks:
    """`docsam_cli.distributed.Distributed` as rank `rank` of two sees it, in one process: what rank 0
    sends goes through pickle as through the store; `peer_sees` is what the other rank reports."""

    def __init__(
        self, rank: int, store, main: TwoRanks | None = None, peer_sees: bool = True, peer_folder: str = ""
    ) -> None:
        self.rank, self.store, self.device = rank, store, "cpu"
        self.is_main = rank == 0
        self.main, self.peer_sees, self.peer_folder = main, peer_sees, peer_folder or os.getcwd()
        self.sent = None

    def from_main(self, value):
        if self.is_main:
            self.sent = pickle.dumps(value)
        return pickle.loads(self.sent if self.main is None else self.main.sent)

    def gather(self, value):
        """The other rank's part: whether it sees the output folder, and its working folder."""
        peer = (self.peer_sees, self.peer_folder)
        return [value, peer] if self.is_main else [peer, value]


def test_rank_0_cleans_lists_and_shares_the_work_every_rank_gets_it_whole(tmp_path):
    from torch.distributed import HashStore

    out = tmp_path / "out"
    (out / "jsonl").mkdir(parents=True)
    stale = [rank_jsonl_path(out, 5), out / ".docsam" / "run-0123"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("an earlier run's")
    task = PageTask(tmp_path / "doc.pdf", 2, "doc_p0002", "pdf", LoadOptions(dpi=72), (612.0, 792.0))
    refused = InputError(tmp_path / "broken.png", "not an image", None)
    store = HashStore()
    main = Ranks(TwoRanks(0, store), out, jsonl=True)
    listed = []
    work = main.share_work(lambda: listed.append(1) or [task, refused])
    assert listed == [1] and not any(path.exists() for path in stale)
    assert work[0] == task and isinstance(work[1], InputError) and str(work[1]) == str(refused)

    # Rank 1 gets the same list without listing anything; both claim from the same queue.
    other = Ranks(TwoRanks(1, store, main=main.distributed), out, jsonl=True)
    shared = other.share_work(lambda: pytest.fail("only rank 0 lists"))
    assert [str(item) for item in shared] == [str(item) for item in work]
    claimed = [next(iter(main.claim(work)))[0], next(iter(other.claim(shared)))[0]]
    assert sorted(claimed) == [0, 1] and list(main.claim(work)) == list(other.claim(shared)) == []


def test_a_rank_that_stops_stops_the_others_at_once(tmp_path, monkeypatch):
    """A rank waiting for the others (up to hours under srun, where no torchrun stops them) stops as soon
    as one of them reports that it stopped (`docsam segment` reports every error that ends a rank's run)."""
    from torch.distributed import HashStore

    import docsam_cli.distributed
    from docsam_cli.distributed import Distributed

    # The reporting rank waits for the others to read its report, up to this long (rank 1 reads it at once).
    monkeypatch.setattr(docsam_cli.distributed, "FAILURE_LINGER_SECONDS", 0.5)
    store = HashStore()
    main, other = (
        Ranks(Distributed(rank, 2, store=store, process_group=False), tmp_path / "out", jsonl=False)
        for rank in (0, 1)
    )
    stopped: list[str] = []

    def wait_for_the_list() -> None:
        with pytest.raises(UsageError) as error:
            other.share_work(lambda: pytest.fail("only rank 0 lists"))
        stopped.append(str(error.value))

    waiting = threading.Thread(target=wait_for_the_list, daemon=True)
    waiting.start()

    def cannot_list():
        raise UsageError("scans/: no such file or folder")

    with pytest.raises(UsageError, match=r"^scans/: no such file or folder$") as failure:
        main.share_work(cannot_list)
    time.sleep(0.3)
    assert waiting.is_alive() and not stopped
    main.report_failure(failure.value)
    assert store.check(["docsam/attempt-0/failed/read/1"]), "rank 0 left before rank 1 read its report"
    started = time.monotonic()
    other.report_failure(UsageError("a later report does not replace the first"))
    assert time.monotonic() - started < 0.4, "a rank stopped by another's report waits for no one"
    waiting.join(timeout=10)
    assert stopped == ["rank 0 stopped the run: scans/: no such file or folder"]


def test_ranks_that_all_stop_on_their_own_do_not_wait_for_each_other(monkeypatch):
    """Weights missing on every rank: each stops before any exchange. The first to report waits for no
    one once the others have reported too (it used to wait out the linger, and torchrun, seeing another
    rank exit, stopped it with SIGTERM: `error: interrupted` and exit 130 instead of its reason)."""
    from torch.distributed import HashStore

    import docsam_cli.distributed
    from docsam_cli.distributed import Distributed

    monkeypatch.setattr(docsam_cli.distributed, "FAILURE_LINGER_SECONDS", 10.0)
    store = HashStore()
    first, second = (Distributed(rank, 2, store=store, process_group=False) for rank in (1, 0))
    lingering = threading.Thread(target=first.report_failure, args=("no such weights file",), daemon=True)
    started = time.monotonic()
    lingering.start()
    time.sleep(0.3)
    assert lingering.is_alive(), "the first report waits for the others to read it"
    second.report_failure("no such weights file")
    lingering.join(timeout=10)
    assert time.monotonic() - started < 3


def test_sigterm_while_a_failing_rank_waits_for_the_others_leaves_its_own_error(monkeypatch):
    """torchrun stops the ranks left (SIGTERM) once one exits: a rank waiting for the others to read its
    report then stops with its own error, not as interrupted (exit 130, its reason never shown)."""
    from torch.distributed import HashStore

    import docsam_cli.distributed
    from docsam_cli.distributed import Distributed
    from docsam_cli.interruption import terminate_as_interrupt

    monkeypatch.setattr(docsam_cli.distributed, "FAILURE_LINGER_SECONDS", 10.0)
    ranks = Distributed(1, 2, store=HashStore(), process_group=False)
    launcher = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    started = time.monotonic()
    try:
        with terminate_as_interrupt():
            launcher.start()
            ranks.report_failure("no such weights file")
    except KeyboardInterrupt:
        pytest.fail("the rank stopped as interrupted, its own error lost")
    launcher.join()
    assert time.monotonic() - started < 3


def test_a_rank_that_cannot_see_the_output_folder_stops_the_run_on_every_rank(tmp_path):
    from torch.distributed import HashStore

    ranks = Ranks(TwoRanks(0, HashStore(), peer_sees=False), tmp_path / "out", jsonl=False)
    with pytest.raises(UsageError) as refused:
        ranks.share_work(lambda: [])
    assert str(refused.value) == (
        f"--out {tmp_path / 'out'}: rank 1 cannot see the files rank 0 writes there; with several "
        "machines, --out must be on a file system they share"
    )


def test_a_rank_in_another_working_folder_that_misses_a_relative_output_folder_is_told_why(
    tmp_path, monkeypatch
):
    """Ranks started in different working folders with a relative --out (`--out run`) look for the output
    folder in different places: the rank that misses it was told to put --out on a shared file system,
    where it was, and the working folder went unnamed (the check of the working folders came after). Such a
    rank is now told that its working folder differs."""
    from torch.distributed import HashStore

    monkeypatch.chdir(tmp_path)
    ranks = Ranks(
        TwoRanks(0, HashStore(), peer_sees=False, peer_folder="/home/someone"), Path("out"), jsonl=False
    )
    with pytest.raises(UsageError) as refused:
        ranks.share_work(lambda: [])
    assert str(refused.value) == (
        "--out out: rank 1 cannot see the files rank 0 writes there: it runs in another working folder "
        f"than rank 0 ({tmp_path}), from which a relative --out names another folder; start every rank in "
        "the same folder, or give --out as an absolute path"
    )


def test_a_rank_in_another_working_folder_stops_the_run_when_inputs_are_relative(tmp_path, monkeypatch):
    """The same command on two machines, one started in another folder: rank 0's relative paths would name
    no file there (every page that rank took failed: `in/p1.png: no such file or directory`), or another
    file. Absolute inputs are read alike from any folder."""
    from torch.distributed import HashStore

    monkeypatch.chdir(tmp_path)
    relative = PageTask(Path("scans/a.png"), None, "a", "image", LoadOptions())
    absolute = PageTask(tmp_path / "scans" / "a.png", None, "a", "image", LoadOptions())
    elsewhere = Ranks(TwoRanks(0, HashStore(), peer_folder="/home/someone"), tmp_path / "out", jsonl=False)
    with pytest.raises(UsageError) as refused:
        elsewhere.share_work(lambda: [relative])
    assert str(refused.value) == (
        f"rank 1 runs in another working folder than rank 0 ({tmp_path}): the inputs are named by relative "
        "paths, which each rank reads from its own working folder; start every rank in the same folder, or "
        "give the inputs as absolute paths"
    )
    assert elsewhere.share_work(lambda: [absolute]) == [absolute]
    together = Ranks(TwoRanks(0, HashStore(), peer_folder=str(tmp_path)), tmp_path / "out", jsonl=False)
    assert together.share_work(lambda: [relative]) == [relative]


class Recorder:
    """A `Reporter` that remembers what it was told."""

    def __init__(self) -> None:
        self.started, self.advanced, self.errors, self.data, self.summaries = 0, 0, [], [], []

    def start(self, label):
        self.started += 1

    def advance(self):
        self.advanced += 1

    def error(self, message):
        self.errors.append(message)

    def data(self, line):
        self.data.append(line)

    def summary(self, lines):
        self.summaries.append(list(lines))


def test_one_progress_bar_counts_every_rank_and_each_rank_writes_its_own_json_lines(tmp_path):
    from torch.distributed import HashStore

    store, out = HashStore(), tmp_path / "out"
    main = Ranks(TwoRanks(0, store), out, jsonl=True)
    main.share_work(lambda: [])
    other = Ranks(TwoRanks(1, store, main=main.distributed), out, jsonl=True)
    other.share_work(lambda: [])
    shown, silent = Recorder(), Recorder()
    main_reporter, other_reporter = main.reporter(shown), other.reporter(silent)
    main_reporter.start("segment")
    other_reporter.start("segment")
    for _ in range(3):
        other_reporter.advance()
        other_reporter.data('{"page_id": "b"}\n')
    main_reporter.advance()
    main_reporter.data('{"page_id": "a"}\n')
    other_reporter.error("broken.png: not an image")
    other_reporter.close()
    main_reporter.summary(["4 pages"])
    assert (shown.started, shown.advanced, shown.summaries) == (1, 4, [["4 pages"]])
    assert (silent.started, silent.advanced, silent.summaries) == (0, 0, [])
    assert silent.errors == ["broken.png: not an image"] and silent.data == [] == shown.data
    assert rank_jsonl_path(out, 0).read_text() == '{"page_id": "a"}\n'
    assert rank_jsonl_path(out, 1).read_text() == '{"page_id": "b"}\n' * 3


# --- whole runs ------------------------------------------------------------------------------------


def docsam_env() -> dict[str, str]:
    # One thread per process, as torchrun sets for several processes: a single process compared with
    # them computes in the same order, so that their outputs can be compared exactly.
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}


def segment_command(weights: Path, out: Path, inputs: list[Path], *args: str) -> list[str]:
    """`docsam segment` of `inputs` in the tiny geometry, the options of `args` replacing its own."""
    return [
        "segment", *map(str, inputs), "--weights", str(weights), "--out", str(out), "--dpi", "72",
        *overridden(TINY_GEOMETRY, args), *args,
    ]  # fmt: skip


def torchrun(command: list[str], *launcher: str) -> list[str]:
    return [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", *launcher, "-m", "docsam_cli", *command]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, env=docsam_env(), timeout=RUN_TIMEOUT, check=False
    )


def json_lines(out: Path) -> list[dict]:
    """Every rank's JSON lines."""
    return [json.loads(line) for path in sorted((out / "jsonl").glob("rank-*.jsonl")) for line in path.open()]


def small_page(source: Path, height: int) -> Image.Image:
    with Image.open(source) as image:
        return image.convert("RGB").resize((height * 3 // 4, height))


@pytest.fixture(scope="module")
def mixed_inputs(tmp_path_factory, shared_data) -> list[Path]:
    """Five images, a 3-page PDF, a 3-frame TIFF and a broken file: 11 pages and a failure."""
    folder = tmp_path_factory.mktemp("inputs")
    scans = sorted((shared_data / "pages" / "publaynet" / "images").glob("*.jpg"))
    pages = [small_page(scans[index % len(scans)], 96 + 8 * index) for index in range(11)]
    inputs = []
    for index, page in enumerate(pages[:5]):
        inputs.append(folder / f"scan{index}.{'png' if index % 2 else 'jpg'}")
        page.save(inputs[-1])
    inputs.append(folder / "broken.png")
    inputs[-1].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    inputs.append(folder / "report.pdf")
    pages[5].save(inputs[-1], save_all=True, append_images=pages[6:8], resolution=72.0)
    inputs.append(folder / "volume.tif")
    pages[8].save(inputs[-1], save_all=True, append_images=pages[9:11])
    return inputs


def comparable(out: Path) -> dict[str, object]:
    """Every output of a run, timing fields aside and the output folder's name replaced."""
    files: dict[str, object] = {}
    for path in sorted(out.rglob("*")):
        name = path.relative_to(out).as_posix()
        if path.is_dir() or name.startswith("jsonl/"):
            continue
        if path.suffix == ".xml":
            document = etree.parse(str(path))
            for stamp in document.getroot().iterfind("{*}Metadata/*"):
                if stamp.tag.endswith(("Created", "LastChange")):
                    stamp.text = ""
            files[name] = etree.tostring(document)
        elif path.suffix == ".json":
            data = json.loads(path.read_text().replace(str(out), "OUT"))
            if isinstance(data, dict):
                data.pop("timing", None)
                data.get("info", {}).pop("date_created", None)
            files[name] = data
        else:
            files[name] = path.read_bytes()
    return files


@pytest.mark.slow
def test_two_ranks_write_what_one_process_writes_every_page_once(tmp_path, tiny_weights, mixed_inputs):
    alone = run(
        [sys.executable, "-m", "docsam_cli", *segment_command(tiny_weights, tmp_path / "alone", mixed_inputs)]
    )
    ranks = run(torchrun(segment_command(tiny_weights, tmp_path / "ranks", mixed_inputs)))
    assert alone.returncode == 1, alone.stderr
    assert ranks.returncode == 1, ranks.stderr
    broken = mixed_inputs[5]
    summary = "11 pages segmented, 0 skipped (already done), 1 failed"
    assert summary in alone.stderr and summary in ranks.stderr
    assert f"  failed: {broken}: " in ranks.stderr
    assert ranks.stderr.count(f"error: {broken}: ") == 1

    expected, outputs = comparable(tmp_path / "alone"), comparable(tmp_path / "ranks")
    assert len([name for name in expected if name.startswith(".docsam/records/")]) == 11
    assert outputs.keys() == expected.keys()
    for name, content in expected.items():
        assert outputs[name] == content, name
    coco = json.loads((tmp_path / "ranks" / "coco.json").read_text())
    assert len(coco["images"]) == 11 and coco["annotations"]

    lines = json_lines(tmp_path / "ranks")
    one_process = [json.loads(line) for line in alone.stdout.splitlines()]
    assert Counter(line["page_id"] for line in lines) == Counter(line["page_id"] for line in one_process)
    assert Counter(line["page_id"] for line in lines if "error" not in line).most_common(1)[0][1] == 1
    assert [line["input"] for line in lines if "error" in line] == [str(broken)]
    assert all((tmp_path / "ranks" / "jsonl" / f"rank-{rank}.jsonl").stat().st_size > 0 for rank in (0, 1))
    assert not leftover_temporaries(tmp_path / "ranks")
    assert not list((tmp_path / "ranks" / ".docsam").glob("run-*"))


@pytest.mark.slow
def test_an_empty_stdin_on_rank_0_is_said_not_a_silent_run_that_does_nothing(tmp_path, tiny_weights):
    """Only rank 0 reads the paths on stdin; under `srun torchrun` it may run on a machine whose stdin is
    empty while the list went elsewhere. The run did nothing and exited 0 without a word; it still exits
    0 (an empty list is nothing to do, as for one process, which says nothing of it) but says why."""
    alone, ranks = (
        subprocess.run(
            [*launcher, *segment_command(tiny_weights, tmp_path / name, [Path("-")])],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=docsam_env(),
            timeout=RUN_TIMEOUT,
            check=False,
        )
        for name, launcher in (
            ("alone", [sys.executable, "-m", "docsam_cli"]),
            ("ranks", torchrun([])),
        )
    )
    summary = "0 pages segmented, 0 skipped (already done), 0 failed"
    assert alone.returncode == 0 and summary in alone.stderr and "warning" not in alone.stderr, alone.stderr
    assert ranks.returncode == 0 and summary in ranks.stderr, ranks.stderr
    assert (
        f"warning: -: no path on stdin: under a launcher only rank 0 reads the paths on stdin, and its stdin "
        f"(on {socket.gethostname()}) held none; give rank 0 the list there"
    ) in ranks.stderr
    assert ranks.stderr.count("warning: -: no path on stdin") == 1


@pytest.fixture
def two_pages(tmp_path, shared_data) -> list[Path]:
    scans = sorted((shared_data / "pages" / "publaynet" / "images").glob("*.jpg"))
    pages = [tmp_path / f"page{index}.png" for index in range(2)]
    for index, page in enumerate(pages):
        small_page(scans[index], 96).save(page)
    return pages


@pytest.mark.slow
def test_a_class_map_naming_a_class_the_run_does_not_segment_is_one_warning_not_one_per_rank(
    tmp_path, tiny_weights, two_pages
):
    """The warning of `--page-map` or `--alto-map` naming a class the run does not segment was printed by
    every rank, as each runs the command: twice under two ranks, eight times under eight."""
    maps = ["--page-map", "Tabel=GraphicRegion", "--alto-map", "figur=Illustration"]
    command = segment_command(tiny_weights, tmp_path / "out", two_pages, "--classes", "text,table", *maps)
    ranks = run(torchrun([*command, "--format", "coco"]))
    assert ranks.returncode == 0, ranks.stderr
    for option, name in (("--page-map", "Tabel"), ("--alto-map", "figur")):
        warning = (
            f"warning: {option} names a class that the run does not segment, which it leaves unused: "
            f"'{name}' (the classes: text, table)"
        )
        assert ranks.stderr.count(warning) == 1, ranks.stderr


@pytest.mark.slow
def test_a_warning_of_the_overlays_is_one_line_not_one_per_rank(tmp_path, tiny_weights, shared_data):
    """A class name no installed font draws: each rank drawing overlays warned of it, once per rank (twice
    under two ranks, eight times under eight), though it is the same for the whole run."""
    scans = sorted((shared_data / "pages" / "publaynet" / "images").glob("*.jpg"))
    pages = [tmp_path / f"page{index}.png" for index in range(8)]
    for index, page in enumerate(pages):  # enough pages for both ranks to draw overlays
        small_page(scans[index % len(scans)], 96).save(page)
    undrawable = "\U000f0001\U000f0002"  # private-use code points: no font draws them
    command = segment_command(tiny_weights, tmp_path / "out", pages, "--classes", f"{undrawable},text")
    ranks = run(torchrun([*command, "--format", "overlay,jsonl"]))
    assert ranks.returncode == 0, ranks.stderr
    # Both ranks drew overlays (each did pages).
    assert all((tmp_path / "out" / "jsonl" / f"rank-{rank}.jsonl").stat().st_size > 0 for rank in (0, 1))
    assert ranks.stderr.count(f"warning: overlays draw the class name(s) {undrawable!r} as boxes") == 1


@pytest.mark.slow
def test_info_lines_about_the_whole_run_are_said_once_those_about_a_rank_by_each(
    tmp_path, tiny_weights, shared_data
):
    """With -v every rank said the run's classes and geometry, the same lines twice under two ranks (eight
    times under eight). Rank 0 alone says them now; what each rank loads, on which device, is still said by
    each."""
    scans = sorted((shared_data / "pages" / "publaynet" / "images").glob("*.jpg"))
    pages = [tmp_path / f"page{index}.png" for index in range(8)]
    for index, page in enumerate(pages):  # enough pages for both ranks to load the model
        small_page(scans[index % len(scans)], 96).save(page)
    command = segment_command(tiny_weights, tmp_path / "out", pages, "--format", "jsonl", "-v")
    ranks = run(torchrun(command))
    assert ranks.returncode == 0, ranks.stderr
    assert all((tmp_path / "out" / "jsonl" / f"rank-{rank}.jsonl").stat().st_size > 0 for rank in (0, 1))
    lines = ranks.stderr.splitlines()
    assert sum(line.startswith("info: classes: ") for line in lines) == 1, ranks.stderr
    assert sum(line.startswith("info: geometry: ") for line in lines) == 1, ranks.stderr
    assert sum(line.startswith(f"info: loading {tiny_weights} ") for line in lines) == 2, ranks.stderr


def worker_pids(launcher: int) -> dict[int, int]:
    """rank → pid of the processes torchrun (pid `launcher`) started."""
    workers = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environment = (entry / "environ").read_bytes().split(b"\0") if parent == launcher else []
        except (OSError, ValueError):
            continue
        for variable in environment:
            if variable.startswith(b"RANK="):
                workers[int(variable[5:])] = int(entry.name)
    return workers


def kill_rank_part_way(command: list[str], records: Path, log: Path, rank: int = 1) -> int:
    """Start `command` (a torchrun), SIGKILL the worker of `rank` once three pages are done; returns
    torchrun's exit code. What torchrun and its workers print goes to `log`, for the failure message."""
    with log.open("w") as stderr:
        launcher = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=docsam_env(),
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline and launcher.poll() is None:
            if len(list(records.glob("*.json"))) >= 3:
                os.kill(worker_pids(launcher.pid)[rank], signal.SIGKILL)
                break
            time.sleep(0.02)
        return launcher.wait(timeout=RUN_TIMEOUT)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()


def tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def many_pages(tmp_path, shared_data) -> list[Path]:
    scans = sorted((shared_data / "pages" / "publaynet" / "images").glob("*.jpg"))
    folder = tmp_path / "pages"
    folder.mkdir()
    for index in range(16):
        small_page(scans[index % len(scans)], 240 + 4 * index).save(folder / f"page{index:02d}.png")
    return sorted(folder.iterdir())


def outputs_state(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file of every page that has a record: a rewritten file changes both."""
    state = {}
    for record in (out / ".docsam" / "records").glob("*.json"):
        page_id = record.stem
        for path in [
            record,
            out / ".docsam" / "coco-parts" / f"{page_id}.json",
            out / "page" / f"{page_id}.xml",
            out / "overlay" / f"{page_id}.png",
        ]:
            stat = path.stat()
            state[str(path)] = (stat.st_ino, stat.st_mtime_ns)
    return state


def assert_complete_and_valid(out: Path, pages: list[Path], shared_data: Path) -> None:
    schema = etree.XMLSchema(etree.parse(str(shared_data / "schema" / "2019-07-15" / "pagecontent.xsd")))
    for page in pages:
        schema.assertValid(etree.parse(str(out / "page" / f"{page.stem}.xml")))
        with Image.open(out / "overlay" / f"{page.stem}.png") as overlay:
            overlay.verify()
    coco = COCO(str(out / "coco.json"))
    assert [image["file_name"] for image in coco.dataset["images"]] == [page.name for page in pages]
    assert len(coco.loadRes(str(out / "coco_results.json")).getAnnIds()) == len(coco.getAnnIds())
    assert not leftover_temporaries(out)


@pytest.mark.slow
def test_a_killed_rank_loses_nothing_and_the_rerun_does_each_remaining_page_once(
    tmp_path, tiny_weights, many_pages, shared_data
):
    out = tmp_path / "out"
    command = torchrun(
        segment_command(tiny_weights, out, many_pages, "--short-side", "128", "--window", "128")
    )
    log = tmp_path / "torchrun.log"
    assert kill_rank_part_way(command, out / ".docsam" / "records", log) != 0, tail(log)
    done_before = outputs_state(out)
    pages_before = {Path(path).stem for path in done_before if "/records/" in path}
    assert 3 <= len(pages_before) < len(many_pages), "the run should have been killed part-way"

    rerun = run(command)
    assert rerun.returncode == 0, rerun.stderr
    assert (
        f"{len(many_pages) - len(pages_before)} pages segmented, {len(pages_before)} skipped" in rerun.stderr
    )
    lines = json_lines(out)
    assert Counter(line["page_id"] for line in lines) == Counter(page.stem for page in many_pages)
    assert {line["page_id"] for line in lines if line.get("skipped")} == pages_before
    after = outputs_state(out)
    assert {path: after[path] for path in done_before} == done_before  # nothing written twice
    assert_complete_and_valid(out, many_pages, shared_data)


@pytest.mark.slow
def test_torchrun_restarts_finish_a_run_whose_rank_was_killed(
    tmp_path, tiny_weights, many_pages, shared_data
):
    out = tmp_path / "out"
    geometry = ["--short-side", "128", "--window", "128", "--isolate", "--pages-per-batch", "2"]
    command = torchrun(segment_command(tiny_weights, out, many_pages, *geometry), "--max-restarts", "1")
    log = tmp_path / "torchrun.log"
    assert kill_rank_part_way(command, out / ".docsam" / "records", log) == 0, tail(log)
    lines = json_lines(out)  # the restarted run's
    assert Counter(line["page_id"] for line in lines) == Counter(page.stem for page in many_pages)
    assert any(line.get("skipped") for line in lines), "the restart should have found pages done"
    assert_complete_and_valid(out, many_pages, shared_data)


@pytest.mark.slow
def test_sigterm_to_torchrun_writes_coco_json_over_every_page_the_ranks_finished(
    tmp_path, tiny_weights, many_pages
):
    """A scheduler's SIGTERM reaches torchrun, which passes it to every rank: each finishes writing the pages
    it holds, and rank 0 writes coco.json over the pages done. Rank 0 wrote it as soon as its own pages were
    written, leaving out the pages the other ranks were still writing (7 records, 6 pages in coco.json); it
    now waits for them to stop."""
    out = tmp_path / "out"
    script = PROJECT_ROOT / "tests" / "slow_rank_writes.py"
    command = segment_command(tiny_weights, out, many_pages, "--format", "coco,semantic,jsonl")
    with (tmp_path / "torchrun.log").open("w") as log:
        launcher = subprocess.Popen(
            [str(TORCHRUN), "--standalone", "--nproc_per_node", "3", str(script), *command],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**docsam_env(), "DOCSAM_TEST_WRITE_SECONDS": "2"},
            start_new_session=True,
        )
    records = out / ".docsam" / "records"
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while len(list(records.glob("*.json"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=RUN_TIMEOUT)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    log = tmp_path / "torchrun.log"
    assert log.read_text().count("error: interrupted") == 3, tail(log)
    done = sorted(path.stem for path in records.glob("*.json"))
    assert 3 <= len(done) < len(many_pages), "the run should have been stopped part-way"
    coco = json.loads((out / "coco.json").read_text())
    assert sorted(image["page_id"] for image in coco["images"]) == done
    assert (out / "semantic" / "classes.json").is_file()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_under_srun_rank_0_killed_stops_the_others_with_a_usage_error_not_an_internal_one(
    tmp_path, tiny_weights, many_pages
):
    """A plain srun (no torchrun): rank 0 holds the run's store, and when it was killed outright (out of
    memory) the others stopped with `internal error: DistNetworkError: Broken pipe`, exit 3, the code of a
    bug; they now say that the store is gone and that a rerun does the pages left, exit 2."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "docsam_cli", *segment_command(tiny_weights, out, many_pages)]
    launcher = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    ranks = [
        subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**docsam_env(), **launcher, "RANK": str(rank), "LOCAL_RANK": str(rank)},
        )
        for rank in (0, 1)
    ]
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while len(list((out / ".docsam" / "records").glob("*.json"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        ranks[0].kill()
        _, stderr = ranks[1].communicate(timeout=RUN_TIMEOUT)
    finally:
        for rank in ranks:
            rank.kill()
            rank.communicate()
    assert ranks[1].returncode == 2, stderr
    assert stderr.splitlines()[-1] == (
        f"error: the run's store at 127.0.0.1:{launcher['MASTER_PORT']} stopped answering: the process "
        "holding it (rank 0, or torchrun) was killed or ran out of memory?; a rerun does the pages left"
    )


@pytest.mark.parametrize(
    ("local_rank", "share", "expected"),
    [(0, False, 0), (3, False, 3), (0, True, 0), (3, True, 1), (4, True, 0)],
)
def test_segment_ranks_share_the_gpus_round_robin_training_ranks_do_not(
    monkeypatch, local_rank, share, expected
):
    """Under a launcher a process takes GPU LOCAL_RANK; `segment`'s processes (gloo only) may share GPUs, so
    that four processes on a 2-GPU machine take GPUs 0, 1, 0, 1. No GPU needed: only the choice is asked."""
    import torch

    from docsam_cli.distributed import _launched_gpu

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    assert _launched_gpu(world_size=5, share_gpus=share) == expected


@pytest.mark.parametrize("missing", ["RANK", "MASTER_ADDR"])
def test_world_size_without_the_rest_of_a_launcher_is_a_usage_error(
    tmp_path, tiny_weights, shared_data, monkeypatch, missing
):
    """`WORLD_SIZE` exported without a launcher (a job script, a command started without torchrun): torch's
    rendezvous refuses, which `segment` reported as `internal error: ValueError: ...` (exit 3). A request
    that cannot start, named as such (exit 2), before any page."""
    from cli_helpers import run_docsam

    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    if missing == "MASTER_ADDR":
        monkeypatch.setenv("RANK", "0")
    page = next((shared_data / "pages").rglob("*.png"))
    result = run_docsam(
        "segment", str(page), "--weights", str(tiny_weights), *TINY_GEOMETRY, "-o", str(tmp_path)
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "error: WORLD_SIZE is 2, yet the launcher's environment is incomplete (environment variable "
        f"{missing} expected, but not set): start the command with torchrun (or a launcher that also sets "
        "RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT), or unset WORLD_SIZE"
    )


@pytest.mark.parametrize("name", ["MASTER_PORT", "LOCAL_RANK"])
def test_a_launcher_variable_that_is_no_number_is_named(
    tmp_path, tiny_weights, shared_data, monkeypatch, name
):
    """`MASTER_PORT=x` beside WORLD_SIZE said 'the launcher's environment is incomplete (invalid literal for
    int() with base 10: 'x')', naming no variable."""
    from cli_helpers import run_docsam

    launcher = {
        "WORLD_SIZE": "2",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1",
    }
    for variable, value in {**launcher, name: "x"}.items():
        monkeypatch.setenv(variable, value)
    page = next((shared_data / "pages").rglob("*.png"))
    result = run_docsam(
        "segment", str(page), "--weights", str(tiny_weights), *TINY_GEOMETRY, "-o", str(tmp_path)
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: WORLD_SIZE is 2, yet {name} is 'x', not a whole number: start the command with torchrun "
        "(or a launcher that also sets RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT), or unset WORLD_SIZE"
    )


def test_a_world_size_that_is_no_number_is_a_usage_error(tmp_path, tiny_weights, shared_data, monkeypatch):
    """`WORLD_SIZE=abc` came out as `internal error: ValueError: invalid literal for int()` (exit 3)."""
    from cli_helpers import run_docsam

    monkeypatch.setenv("WORLD_SIZE", "abc")
    page = next((shared_data / "pages").rglob("*.png"))
    result = run_docsam(
        "segment", str(page), "--weights", str(tiny_weights), *TINY_GEOMETRY, "-o", str(tmp_path)
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "error: WORLD_SIZE is 'abc', not a number of processes: start the command with torchrun (or a "
        "launcher that also sets RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT), or unset WORLD_SIZE"
    )


def test_a_rank_that_is_no_number_is_a_usage_error(tmp_path, tiny_weights, shared_data, monkeypatch):
    """`RANK=x` left in the environment (no launcher) ended a run that had a warning to give as 'error:
    internal error: ValueError: invalid literal for int() with base 10: 'x'' (exit 3), naming no variable."""
    from cli_helpers import run_docsam

    monkeypatch.setenv("RANK", "x")
    page = next((shared_data / "pages").rglob("*.png"))
    result = run_docsam(
        "segment",
        str(page),
        "--weights",
        str(tiny_weights),
        *TINY_GEOMETRY,
        "-o",
        str(tmp_path),
        "--classes",
        "text",
        "--page-map",
        "Tabel=TextRegion",  # a class not segmented: a warning
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "error: RANK is 'x', not a process's rank: start the command with torchrun (which sets it), or "
        "unset RANK"
    )
