"""`dance train` on a dataset index (`data.index`): counts from the index, a bounded number of
open recordings, an order shuffled across recordings and sharded over ranks, and DDP gradients
equal to one process's average over the same shards. The recordings are copies of the sample
recording, indexed with the real `dance dataset index`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dance import data, train
from dance.dataset import split_for

from .conftest import AEA_VRS, dance

TINY_MODEL = ["model.decoder.widths=[8,8,8,8,8]", "model.latent_channels=8"]
FRAMES = 8          # RGB frames of the sample recording
SHARDS = 2          # ranks of the gradient check


def _names(split: str, count: int) -> list[str]:
    """Recording ids that `dance dataset index` (seed 0, default fractions) puts in `split`."""
    ids = (f"site{i}/rec" for i in range(1000))
    return [rid for rid in ids if split_for(rid, 0) == split][:count]


def _index(root: Path, ids: list[str], source: Path = AEA_VRS) -> Path:
    for rid in ids:
        (root / rid).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, root / f"{rid}.vrs")
    out = root / "index.parquet"
    made = dance("dataset", "index", root, "-o", out)
    assert made.returncode == 0, made.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    """Four train recordings and one val recording."""
    if not AEA_VRS.exists():
        pytest.skip(f"sample AEA recording not found at {AEA_VRS} (needs ../shared beside the repo)")
    return _index(tmp_path_factory.mktemp("recordings"), _names("train", 4) + _names("val", 1))


def _open_vrs_files(root: Path) -> int:
    """Files under `root` this process holds open (what a provider holds while it lives)."""
    fds = Path("/proc/self/fd")
    links = [os.readlink(fd) for fd in fds.iterdir() if fd.is_symlink()]
    return sum(link.startswith(str(root)) and link.endswith(".vrs") for link in links)


def test_counts_come_from_the_index_and_nothing_is_opened_up_front(index, monkeypatch):
    monkeypatch.chdir(index.parent)                     # a relative index: like sources, from the cwd
    splits = data.build_datasets({"index": index.name, "crop": 64}, "image")
    train_set, val_set = splits.train, splits.val
    assert (len(train_set), len(val_set)) == (4 * FRAMES, FRAMES)
    assert train_set.recordings.opens == val_set.recordings.opens == 0
    assert "4 train recordings, 32 RGB frames; 1 val recording for validation" in splits.notes[0]
    item = train_set[FRAMES + 3]
    assert item.shape == (3, 64, 64) and item.dtype == torch.uint8
    assert train_set.recordings.opens == 1


def test_index_items_are_the_frames_and_segments_the_file_readers_give(index):
    from dance.dataset import load_index

    row = load_index(index, "val")
    frames = data.IndexFrames(row, crop=None, train=False)
    reference = data.VrsFrames([Path(row[0].path)], crop=None, train=False)
    assert torch.equal(frames[5], reference[5])
    segment = int(0.05 * data.AUDIO_RATE)
    audio = data.IndexAudio(row, segment, crop=None, train=False)
    expected = data.VrsAudio([Path(row[0].path)], segment, crop=None, train=False)
    assert len(audio) == len(expected) == row[0].audio_frames // segment
    assert all(torch.equal(audio[k], expected[k]) for k in (0, len(audio) - 1))
    assert audio[0].shape == (7, segment) and audio[0].dtype == torch.int32


def test_sampler_shards_are_disjoint_cover_the_items_and_change_per_epoch():
    counts = [FRAMES] * 4
    total = sum(counts)
    one = train.RecordingGroupSampler(counts, 2, train.Dist(), seed=0)
    assert sorted(one) == list(range(total))
    shards = [list(train.RecordingGroupSampler(counts, 2, train.Dist(r, 3), seed=0)) for r in range(3)]
    assert [len(s) for s in shards] == [total // 3] * 3               # equal lengths, tail dropped
    assert len(set().union(*map(set, shards))) == 3 * (total // 3)      # disjoint
    assert set().union(*map(set, shards)) <= set(range(total))
    first, again = one.order(0), one.order(0)
    assert np.array_equal(first, again) and not np.array_equal(first, one.order(1))
    # the first half of the epoch is one group: two recordings, their frames interleaved
    recordings = first[:2 * FRAMES] // FRAMES
    assert len(set(recordings)) == 2 and len(set(recordings[:FRAMES])) == 2
    # resuming mid-epoch skips what was done
    one.set_position(1, 5)
    assert len(one) == total - 5 and list(one) == one.order(1)[5:].tolist()
    assert len(one) == total                                           # the skip is used once


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files in /proc/self/fd")
def test_at_most_k_recordings_are_open_and_each_is_opened_once_per_epoch(index):
    splits = data.build_datasets({"index": str(index), "crop": 16, "open_recordings": 2}, "image")
    items = splits.train
    sampler = train.RecordingGroupSampler(items.counts, items.max_open, train.Dist(), seed=3)
    most = 0
    for i in sampler:
        items[i]
        most = max(most, _open_vrs_files(index.parent))
    assert most == 2 and items.recordings.opens == 4
    # the same two open recordings over an order that ignores the groups reopen files again and again
    scattered = data.build_datasets({"index": str(index), "crop": 16, "open_recordings": 2}, "image").train
    for i in np.random.default_rng(0).permutation(len(scattered)):
        scattered[int(i)]
    assert scattered.recordings.opens > 8


def test_damaged_frames_are_replaced_by_the_next_intact_frame(tmp_path, aea_vrs, capsys):
    from dance.dataset import load_index

    from .test_vrs_integrity import records

    blob = bytearray(aea_vrs.read_bytes())
    blob[records(bytes(blob), 214)[2][0] + 36] ^= 0x5A                  # frame 2 damaged
    damaged = tmp_path / "damaged.vrs"
    damaged.write_bytes(bytes(blob))
    rows = load_index(_index(tmp_path / "set", ["a"], damaged))
    assert rows[0].damaged_records == 1 and rows[0].rgb_frames == FRAMES
    frames = data.IndexFrames(rows, crop=None, train=False)
    assert len(frames) == FRAMES                                        # the index's count
    assert torch.equal(frames[2], frames[3]) and not torch.equal(frames[1], frames[3])
    assert "items on damaged records of 214-1 are replaced by the next intact ones" in capsys.readouterr().err


def _config(tmp_path: Path, index: Path, **data_keys) -> Path:
    keys = ", ".join(f"{k}: {v}" for k, v in {"index": index, "crop": 64, **data_keys}.items())
    path = tmp_path / "train.yaml"
    path.write_text(f"model: aria-image-v1\ndata: {{{keys}}}\nlmbda: 10.0\nbatch_size: 2\n"
                    f"amp: false\nthreads: 1\nout: {tmp_path / 'run'}\n")
    return path


def _shard_gradients(rank: int, world: int, config: dict, store: str, out: str) -> None:
    """One process of the gradient check. Under DDP (world 2) it trains as a rank of `dance
    train` would: Trainer's sampler, loader and DDP wrapper; alone (world 1) it computes the
    gradients of both ranks' first batches one after the other, without DDP."""
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        trainer = train.Trainer(config, torch.device("cpu"), train.Dist(rank, world), resume=False)
        batch = int(config["batch_size"])
        result = {}
        for shard in ([rank] if world > 1 else range(SHARDS)):
            if world > 1:
                trainer.sampler.set_position(0, 0)
                trainer.loader.generator = torch.Generator().manual_seed(0)
                torch.manual_seed(1000 + shard)                          # crops and quantiser noise
                x = next(iter(trainer.loader))
            else:
                items = trainer.train_set
                order = train.RecordingGroupSampler(items.counts, items.max_open,
                                                    train.Dist(shard, SHARDS), int(config["seed"]))
                torch.manual_seed(1000 + shard)
                x = torch.stack([items[i] for i in list(order)[:batch]])
            trainer.gradients(x)
            grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
            result[shard] = {"x": x, "grads": grads}
        torch.save(result, Path(out) / f"{world}-{rank}.pt")
    finally:
        if world > 1:
            dist.destroy_process_group()


def test_ddp_gradients_on_two_gloo_processes_equal_one_process_averaging_both_shards(tmp_path, index):
    config = train.load_config(_config(tmp_path, index), TINY_MODEL)
    ctx = dict(args=(config, str(tmp_path / "store"), str(tmp_path)), join=True)
    mp.spawn(_shard_gradients, nprocs=SHARDS, **{**ctx, "args": (SHARDS, *ctx["args"])})
    mp.spawn(_shard_gradients, nprocs=1, **{**ctx, "args": (1, *ctx["args"])})
    alone = torch.load(tmp_path / "1-0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"{SHARDS}-{r}.pt", weights_only=True)[r] for r in range(SHARDS)]
    for r in range(SHARDS):                                   # each rank had the batch of its shard
        assert torch.equal(ranks[r]["x"], alone[r]["x"])
    assert not torch.equal(alone[0]["x"], alone[1]["x"])      # and the shards differ
    names = alone[0]["grads"].keys()
    assert names == ranks[0]["grads"].keys() == ranks[1]["grads"].keys() and len(names) > 10
    worst = apart = 0.0
    for name in names:
        a, b = alone[0]["grads"][name], alone[1]["grads"][name]
        mean = (a + b) / 2
        scale = float(mean.abs().max()) + 1e-12
        for rank in ranks:
            worst = max(worst, float((rank["grads"][name] - mean).abs().max()) / scale)
        apart = max(apart, float((a - mean).abs().max()) / scale)
    # float summation order (gloo's all-reduce) differs at ~1e-7; one shard's own gradient is far off
    assert worst < 1e-5, worst
    assert apart > 1e-2, apart


def test_dance_train_on_an_index_writes_a_checkpoint(tmp_path, index):
    config = _config(tmp_path, index)
    sets = [a for s in [*TINY_MODEL, "steps=2", "val_every=2", "checkpoint_every=2", "log_every=1"]
            for a in ("--set", s)]
    run = dance("train", "--config", config, "--device", "cpu", *sets, timeout=300,
                env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "4 train recordings, 32 RGB frames; 1 val recording for validation" in run.stderr
    summary = torch.load(tmp_path / "run" / "final.pt", weights_only=True)["extra"]["summary"]
    assert summary["steps"] == 2 and summary["val_psnr_db"] > 0
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 2


def test_resumed_index_run_across_an_epoch_equals_the_straight_run(tmp_path, index):
    import argparse

    from dance import zoo

    def run(out: str, steps: int, resume: bool = False) -> Path:
        sets = [*TINY_MODEL, "batch_size=8", f"steps={steps}", f"out={tmp_path / out}",
                "checkpoint_every=1", "val_every=100"]        # 4 batches per epoch
        args = argparse.Namespace(config=_config(tmp_path, index), set=sets, resume=resume, device="cpu")
        assert train.main(args) == 0
        return tmp_path / out / "final.pt"

    straight = zoo.load_checkpoint(run("straight", 6))["state_dict"]
    run("resumed", 3)
    resumed = zoo.load_checkpoint(run("resumed", 6, resume=True))["state_dict"]
    assert max((straight[k] - resumed[k]).abs().max().item() for k in straight) < 1e-5


@pytest.mark.parametrize("extra, message", [
    ({"sources": "[x.vrs]"}, "data.index and data.sources: one or the other"),
    ({"val_split": "train"}, "data.val_split: train is data.index_split too"),
    ({"open_recordings": 0}, "data.open_recordings: an integer >= 1, got 0"),
])
def test_bad_index_settings_are_one_line_naming_the_key(tmp_path, index, extra, message):
    run = dance("train", "--config", _config(tmp_path, index, **extra))
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: {message}")


def test_missing_index_and_index_keys_without_an_index_are_one_line(tmp_path):
    missing = tmp_path / "none.parquet"
    run = dance("train", "--config", _config(tmp_path, missing))
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: data.index: {missing}: no such index file (make one with `dance dataset index DIR "
        f"-o none.parquet`)")
    with pytest.raises(data.DataError, match="data.val_split: only with data.index"):
        data.build_datasets({"sources": [str(tmp_path)], "val_split": "val"}, "image")
