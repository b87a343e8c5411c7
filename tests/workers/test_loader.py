"""The loader: kept worker processes, in-order batches, by-value transfer, a killed worker."""

from __future__ import annotations

import os
import pickle
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from workers.scorers.loader import WORKER_DIED, Failed, Loader, pack, safe_piece, unpack


class Rec:
    def __init__(self, sample_id: int) -> None:
        self.sample_id = sample_id


def square(piece: list[Rec]) -> list[object]:
    return [(r.sample_id, os.getpid(), torch.full((3, 4), float(r.sample_id) ** 2)) for r in piece]


def kill_on_7(piece: list[Rec]) -> list[object]:
    if any(r.sample_id == 7 for r in piece):
        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does
    return square(piece)


def fail_on_3(piece: list[Rec]) -> list[object]:
    if any(r.sample_id == 3 for r in piece):
        raise ValueError("bad record")
    return square(piece)


def batches_of(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(n, i + size))) for i in range(0, n, size)]


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_come_back_whole_and_in_order(workers: int) -> None:
    recs = [Rec(i) for i in range(50)]
    order = [list(range(49, 29, -1)), list(range(30))]  # any order of indices, batches of any size
    loader = Loader(square, workers, piece=4)
    try:
        got = list(loader.batches(recs, order))
    finally:
        loader.close()
    assert [[x[0] for x in b] for b in got] == order
    for b in got:
        for sid, _, t in b:
            assert torch.equal(t, torch.full((3, 4), float(sid) ** 2))
    pids = {x[1] for b in got for x in b}
    assert (pids == {os.getpid()}) if workers == 0 else (os.getpid() not in pids and len(pids) <= workers)


def test_workers_are_kept_across_calls_and_stopped_by_close() -> None:
    recs = [Rec(i) for i in range(64)]
    loader = Loader(square, 2, piece=4)
    first = {x[1] for b in loader.batches(recs, batches_of(64, 16)) for x in b}
    second = {x[1] for b in loader.batches(recs, batches_of(64, 16)) for x in b}
    # the same two processes serve both calls (which of them took pieces in a call varies)
    assert len(first | second) <= 2 and os.getpid() not in first | second
    loader.close()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in first | second):
        time.sleep(0.05)
    assert not any(_alive(p) for p in first | second)


def test_workers_end_with_their_parent() -> None:
    script = (
        "import os, sys, time\n"
        "from tests.workers.test_loader import Rec, square, batches_of\n"
        "from workers.scorers.loader import Loader\n"
        "loader = Loader(square, 2, piece=4)\n"
        "pids = {x[1] for b in loader.batches([Rec(i) for i in range(32)], batches_of(32, 8)) for x in b}\n"
        "print(' '.join(map(str, pids)), flush=True)\n"
        "time.sleep(60)\n"
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                          cwd=Path(__file__).resolve().parents[2]) as proc:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids
        proc.kill()  # no clean-up code runs in the parent
    deadline = time.time() + 10
    while time.time() < deadline and any(_exists(p) for p in pids):
        time.sleep(0.1)
    assert not any(_exists(p) for p in pids), "loader workers outlived their parent"


def test_workers_let_go_of_what_their_parent_had_open() -> None:
    read, write = os.pipe()  # like a subprocess's stdin: its reader waits for every writer to close
    loader = Loader(square, 2, piece=4)
    try:
        assert len(list(loader.batches([Rec(i) for i in range(16)], batches_of(16, 8)))) == 2  # forks now
        os.close(write)
        ready, _, _ = select.select([read], [], [], 10)
        assert ready and os.read(read, 1) == b"", "a loader worker still holds the pipe's write end"
        # the workers still work after letting go
        assert [x[0] for x in next(loader.batches([Rec(5)], [[0]]))] == [5]
    finally:
        os.close(read)
        loader.close()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # reparented zombies wait for init to reap them
    except FileNotFoundError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child: reap it
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def test_a_killed_worker_loses_only_its_culprit() -> None:
    recs = [Rec(i) for i in range(24)]
    loader = Loader(kill_on_7, 2, piece=4)
    try:
        got = list(loader.batches(recs, batches_of(24, 8)))
        assert loader.restarts >= 1
        again = list(loader.batches(recs[8:], [list(range(16))]))  # a fresh pool serves later calls
    finally:
        loader.close()
    flat = [x for b in got for x in b]
    assert [x.sample_id if isinstance(x, Failed) else x[0] for x in flat] == list(range(24))
    assert [x for x in flat if isinstance(x, Failed)] == [Failed(7, WORKER_DIED)]
    assert [x.sample_id if isinstance(x, Failed) else x[0] for x in again[0]] == list(range(8, 24))


def test_a_raising_piece_becomes_error_rows() -> None:
    recs = [Rec(i) for i in range(6)]
    for workers in (0, 2):
        loader = Loader(fail_on_3, workers, piece=2)
        try:
            flat = [x for b in loader.batches(recs, [list(range(6))]) for x in b]
        finally:
            loader.close()
        errors = {x.sample_id: x.error for x in flat if isinstance(x, Failed)}
        # the piece holding record 3 fails as a whole (in this process the whole batch is one piece)
        assert 3 in errors and errors[3] == "preprocess failed: ValueError: bad record"
        assert all(not isinstance(x, Failed) for x in flat if x_id(x) not in errors)


def x_id(x: object) -> int:
    return x.sample_id if isinstance(x, Failed) else x[0]  # type: ignore[index]


def test_safe_piece_checks_the_count() -> None:
    with pytest.raises(RuntimeError, match="1 results for 2 samples"):
        safe_piece(lambda piece: piece[:1], [Rec(0), Rec(1)])


def test_pieces_pack_small_tensors_by_value_and_large_ones_in_one_shared_arena() -> None:
    big = torch.arange(3 * 64 * 64, dtype=torch.float32).reshape(3, 64, 64)  # 48 kB: under the line
    obj = {
        "f": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(),  # strided
        "u8": torch.arange(5, dtype=torch.uint8),
        "bf16": torch.ones(2, dtype=torch.bfloat16),  # no numpy dtype: torch's own pickling
        "list": [torch.tensor([1, 2]), "text", 3],
        "big": [torch.cat([big, big]), torch.ones(70_000, dtype=torch.uint8), torch.ones(40_000, dtype=torch.bfloat16),
                torch.cat([big, big]).transpose(1, 2)],  # strided, large
    }
    packed = pack(obj)
    assert len(packed.slots) == 4 and packed.arena is not None and packed.arena.is_shared()
    assert len(packed.data) < 20_000  # the large ones are not in the pickle
    back = unpack(pickle.loads(pickle.dumps(packed)))
    for k in ("f", "u8", "bf16"):
        assert back[k].dtype == obj[k].dtype and torch.equal(back[k], obj[k])
    for got, want in zip(back["big"], obj["big"], strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)
    assert torch.equal(back["list"][0], obj["list"][0]) and back["list"][1:] == ["text", 3]
    back["u8"][0] = 9  # a writable tensor of its own
    assert int(obj["u8"][0]) == 0
    assert unpack(pack([1, "a"])) == [1, "a"] and pack([1]).arena is None


def large(piece: list[Rec]) -> list[object]:
    return [(r.sample_id, torch.full((3, 96, 96), float(r.sample_id)), torch.tensor([r.sample_id])) for r in piece]


def test_large_tensors_come_back_from_the_workers() -> None:
    loader = Loader(large, 2, piece=3)
    try:
        got = [x for b in loader.batches([Rec(i) for i in range(10)], [list(range(10))]) for x in b]
    finally:
        loader.close()
    assert [x[0] for x in got] == list(range(10))
    for sid, image, small in got:
        assert torch.equal(image, torch.full((3, 96, 96), float(sid))) and int(small) == sid
