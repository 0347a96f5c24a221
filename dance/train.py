"""`dance train`: rate-distortion training of a DANCE codec from a YAML config.

Loss per batch (documented in docs/training.md):

    rate  = -sum(log2 p(strings)) / numel(x)        bits per input element (pixel channel, sample)
    mse   = mean((x_hat - x)^2)                       on the preprocessed scale the model sees
    loss  = rate + lmbda * mse

so a higher ``lmbda`` buys quality with bytes (CompressAI's convention, with rate per element
instead of per pixel and no 255^2 factor). Any family trains here: its `parameter_groups()` say
what the optimizers get, its auxiliary parameters are trained on ``model.aux_loss()`` by a
separate optimizer, as in CompressAI. A variable-rate model (``rate.levels`` > 1) draws a
continuous level per batch, uniformly, with ``lmbda: [low, high]`` mapped geometrically onto the
levels (QVRF's joint training); a family may instead name several levels per batch, whose
losses are averaged (`CodecModel.training_levels`: the slimmable family's sandwich rule). With
``rate_control.target_ratio`` (fixed-rate models) the trainer adapts lmbda during training so
that the rate lands on raw_bits / target_ratio.

Runs on CPU, on CUDA with AMP, and on several GPUs under ``torchrun`` (DDP when WORLD_SIZE > 1).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import math
import os
import random
import reprlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import zoo
from .data import DataError, IndexItems, build_datasets
from .heuristics import size_model
from .models import build_model, geometric
from .preprocess import build_preprocessor

RAW_BITS = {"image": 8, "audio": 32}  # bits per raw element: uint8 pixels, int32 mic counts

DEFAULTS: dict = {
    "model": None,
    "model_overrides": {},      # {dotted.key: value} applied to the resolved model config
    "init": None,               # checkpoint whose weights start the run (fine-tuning)
    "data": {},
    "lmbda": 0.01,              # a number, or [low, high] for a variable-rate model's levels
    "rate_control": None,       # {target_ratio, gain, warmup}: adapt lmbda to hit raw_bits / target_ratio
    "distortion": "mse",        # mse (in the model's domain) | relative_linear (audio: see rate_distortion)
    "gain_weight": 1.0,         # relative_linear: weight of the gain error against the residual
    "direction_weight": 0.0,    # audio: weight of the mic-pair cross-spectrum phase term (dance.spatial_loss)
    "batch_size": 8,
    "steps": 1000,
    "epochs": None,             # if set, steps = epochs * batches per epoch
    "lr": 1e-4,
    "aux_lr": 1e-3,
    "entropy_lr": None,         # lr of the entropy bottleneck's density (default: lr)
    "lr_milestones": [],        # fractions of the run after which lr is multiplied by 0.1
    "clip_max_norm": 1.0,
    "seed": 0,
    "out": None,                # run dir; default runs/<config file stem>
    "final": None,              # final checkpoint path; default <out>/final.pt
    "checkpoint_every": 500,
    "val_every": 500,
    "log_every": 10,
    "num_workers": 0,
    "threads": None,            # torch.set_num_threads (CPU)
    "time_limit_minutes": None,  # stop early (and finish normally) after this wall time
    "amp": "auto",              # CUDA: AMP; CPU: bfloat16 autocast where it is faster (probed)
}


class ConfigError(ValueError):
    """A training config that cannot be used; the message names the key."""


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _positive(v) -> bool:
    return _number(v) and v > 0


def _or_null(test):
    return lambda v: v is None or test(v)


# what each top-level key holds, checked before anything is built: (expected, test)
TYPES: dict = {
    "model": ("a zoo name, a model-config path or a mapping", lambda v: isinstance(v, (str, dict))),
    "model_overrides": ("a mapping of dotted.key: value", _or_null(lambda v: isinstance(v, dict))),
    "init": ("a checkpoint path or null", _or_null(lambda v: isinstance(v, str))),
    "data": ("a mapping", lambda v: isinstance(v, dict)),
    "lmbda": ("a number > 0 or [low, high]", lambda v: _positive(v) or (
        isinstance(v, list) and len(v) == 2 and all(_positive(x) for x in v))),
    "rate_control": ("a mapping {target_ratio, gain, warmup} or null",
                     _or_null(lambda v: isinstance(v, dict))),
    "distortion": ("mse or relative_linear", lambda v: v in ("mse", "relative_linear")),
    "gain_weight": ("a number >= 0", lambda v: _number(v) and v >= 0),
    "direction_weight": ("a number >= 0", lambda v: _number(v) and v >= 0),
    "batch_size": ("an integer >= 1", _count),
    "steps": ("an integer >= 1", _count),
    "epochs": ("a number > 0 or null", _or_null(_positive)),
    "lr": ("a number > 0", _positive),
    "aux_lr": ("a number > 0", _positive),
    "entropy_lr": ("a number > 0 or null", _or_null(_positive)),
    "lr_milestones": ("a list of fractions between 0 and 1", lambda v: isinstance(v, list) and all(
        _number(x) and 0 < x < 1 for x in v)),
    "clip_max_norm": ("a number >= 0 or null", _or_null(lambda v: _number(v) and v >= 0)),
    "seed": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "out": ("a folder path or null", _or_null(lambda v: isinstance(v, str))),
    "final": ("a file path or null", _or_null(lambda v: isinstance(v, str))),
    "checkpoint_every": ("an integer >= 1", _count),
    "val_every": ("an integer >= 1", _count),
    "log_every": ("an integer >= 1", _count),
    "num_workers": ("an integer >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool)
                    and v >= 0),
    "threads": ("an integer >= 1 or null", _or_null(_count)),
    "time_limit_minutes": ("a number > 0 or null", _or_null(_positive)),
    "amp": ("true, false or auto", lambda v: v is True or v is False or v == "auto"),
}


def _check_types(config: dict, path: Path, overrides: dict[str, str]) -> None:
    """One ConfigError naming the first key whose value is not of its type, and where it was
    set: `--set KEY=VALUE` (as typed) or the config file."""
    for key, (expected, test) in TYPES.items():
        value = config[key]
        if not test(value):
            where = f"--set {overrides[key]}" if key in overrides else str(path)
            shown = reprlib.repr(value)
            raise ConfigError(f"{where}: {key} must be {expected}, got "
                              f"{type(value).__name__} {shown}")


# ----------------------------------------------------------------------------- config

def _set_dotted(config: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = config
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def _parse_override(item: str) -> tuple[str, object]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected dotted.key=value")
    key, raw = item.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({e})") from None


def resolve_model_config(spec) -> dict:
    """The ``model`` key: a zoo name or model-config path, an inline config, or
    ``{heuristic: {dims, channels, target_ratio | lmbda, mac_budget}, kind, preprocess}``."""
    if spec is None:
        raise ConfigError("model: missing (a zoo name such as aria-image, a model config, "
                          "or a heuristic target)")
    if isinstance(spec, str):
        try:
            return zoo.load_config(spec)
        except zoo.CheckpointError as e:
            raise ConfigError(f"model: {e}") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"model: expected a name or a mapping, got {type(spec).__name__}")
    spec = copy.deepcopy(spec)
    if "heuristic" in spec:
        target = spec.pop("heuristic")
        try:
            config = size_model(int(target["dims"]), int(target["channels"]),
                                **{k: v for k, v in target.items() if k not in ("dims", "channels")})
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"model.heuristic: {e}") from None
        config.update(spec)
        spec = config
    for key in ("dims", "in_channels", "kind"):
        if key not in spec:
            raise ConfigError(f"model.{key}: missing")
    return spec


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> dict:
    """Training config from YAML, defaults filled in, ``--set`` overrides applied. A ``model``
    override is applied first and the model resolved to a full config, so that later overrides
    like ``model.decoder.widths=[32,32]`` edit the resolved model."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a training config must be a mapping")
    unknown = set(loaded) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)} (known: {sorted(DEFAULTS)})")
    config = {**copy.deepcopy(DEFAULTS), **loaded}
    parsed = [_parse_override(o) for o in overrides or []]
    typed = dict(config)
    given = {}
    for (key, value), text in zip(parsed, overrides or []):
        if key in TYPES:
            typed[key], given[key] = value, text
    _check_types(typed, path, given)
    for key, value in parsed:
        if key == "model":
            config["model"] = value
    config["model"] = resolve_model_config(config["model"])
    for key, value in parsed:
        if key.split(".")[0] not in DEFAULTS:
            raise ConfigError(f"--set {key}: unknown key (known: {sorted(DEFAULTS)})")
    # precedence: model config < model_overrides < --set model.KEY (the command line wins)
    for key, value in parsed:
        if key.split(".")[0] != "model":
            _set_dotted(config, key, value)
    for key, value in (config["model_overrides"] or {}).items():
        _set_dotted(config["model"], key, value)
    for key, value in parsed:
        if key.startswith("model."):
            _set_dotted(config, key, value)
    config["out"] = str(config["out"] or Path("runs") / path.stem)
    config["final"] = str(config["final"] or Path(config["out"]) / "final.pt")
    return config


# ----------------------------------------------------------------------------- helpers

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_arg: str | None) -> tuple[Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
        use_cuda = torch.cuda.is_available() and device_arg != "cpu"
        dist.init_process_group("nccl" if use_cuda else "gloo")
        device = torch.device(f"cuda:{d.local_rank}") if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        return d, device
    if device_arg:
        if device_arg.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {device_arg}: CUDA is not available on this machine")
        return Dist(), torch.device(device_arg)
    return Dist(), torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": repr(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import ast

    torch.set_rng_state(state["torch"])
    random.setstate(ast.literal_eval(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Preprocess:
    """Dataset items (channels-first raw tensors) -> the model's preprocessed float tensors, with
    the codec's own preprocessing code (a class, not a closure, so DataLoader workers can pickle it)."""

    def __init__(self, model_config: dict):
        self.pre = build_preprocessor(model_config)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre.kind == "image":
            return self.pre.forward(x.permute(1, 2, 0).numpy())[0]
        return self.pre.forward(x.T.numpy())[0]


class _ResumableSampler(torch.utils.data.Sampler):
    """DistributedSampler (a fresh shuffle per epoch, a shard per rank) that can start mid-epoch."""

    def __init__(self, dataset: Dataset, d: Dist, seed: int):
        self.inner = DistributedSampler(dataset, num_replicas=d.world, rank=d.rank, shuffle=True,
                                        seed=seed, drop_last=d.world > 1)
        self.skip = 0

    def set_position(self, epoch: int, skip: int) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        indices = list(self.inner)[self.skip:]
        self.skip = 0
        return iter(indices)

    def __len__(self) -> int:
        return len(self.inner) - self.skip


class RecordingGroupSampler(torch.utils.data.Sampler):
    """An epoch order of an index dataset's items (dance.data.IndexItems) that mixes recordings
    while only `group` of them are read at a time: per epoch (seeded by seed and epoch) the
    recordings are shuffled and taken `group` at a time, the items of a group shuffled together
    and the groups concatenated. Rank r of w takes every w-th item, every rank the same number
    (the tail is dropped), so the ranks read the same group at the same time. It holds only
    integers, and can start mid-epoch like _ResumableSampler."""

    def __init__(self, counts: Sequence[int], group: int, d: Dist, seed: int):
        self.counts = np.asarray(counts, dtype=np.int64)
        self.starts = np.cumsum(self.counts) - self.counts
        self.group, self.d, self.seed = group, d, seed
        self.per_rank = int(self.counts.sum()) // d.world
        self.epoch = self.skip = 0

    def set_position(self, epoch: int, skip: int) -> None:
        self.epoch, self.skip = epoch, skip

    def order(self, epoch: int) -> np.ndarray:
        """Every item of the epoch, before sharding."""
        rng = np.random.default_rng([self.seed % 2**63, epoch])
        recordings = rng.permutation(len(self.counts))
        groups = [recordings[i:i + self.group] for i in range(0, len(recordings), self.group)]
        return np.concatenate([rng.permutation(np.concatenate(
            [np.arange(self.starts[r], self.starts[r] + self.counts[r]) for r in group]))
            for group in groups])

    def __iter__(self):
        mine = self.order(self.epoch)[self.d.rank::self.d.world][:self.per_rank][self.skip:]
        self.skip = 0
        return map(int, mine)

    def __len__(self) -> int:
        return self.per_rank - self.skip


def rate_distortion(out: dict, x: torch.Tensor, lmbda: float, distortion: str = "mse",
                    pre=None, gain_weight: float = 1.0,
                    direction_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """rate (bits per input element), distortion and loss = rate + lmbda * distortion, float32.

    `mse` is measured in the model's domain (companded, for audio). `relative_linear` (audio)
    undoes the companding and divides each example's squared error by its signal energy: the
    loud passages that dominate SNR and the spatial metrics (SSDR/SRDR) get the weight, where
    companded MSE spends the bits on quiet ones. The error splits into the output's gain error
    along the signal, (1 - g)²·energy, and the residual orthogonal to it; `gain_weight` > 1
    trades residual for an unshrunk output, since SSDR scores the gain and SRDR the residual.
    `direction_weight` > 0 (audio) adds the mic pairs' cross-spectrum phase error
    (`dance.spatial_loss`) to the distortion: the inter-microphone delays perception reads."""
    bits = sum(-torch.log2(l.float()).sum() for l in out["likelihoods"].values())
    rate = bits / x.numel()
    x_hat, x = out["x_hat"].float(), x.float()
    if distortion == "relative_linear":
        lin_hat, lin = expand_torch(x_hat, pre), expand_torch(x, pre)
        time = tuple(range(2, x.dim()))
        energy = (lin ** 2).sum(time).clamp_min(1e-20)                  # B×C
        gain = (lin_hat * lin).sum(time) / energy
        residual = ((lin_hat - gain[(...,) + (None,) * len(time)] * lin) ** 2).sum(time)
        # squared error = (1 - gain)²·energy + residual: gain_weight > 1 penalises the MMSE
        # shrinkage of the output (what SSDR measures) more than the residual (SRDR)
        error = gain_weight * (1 - gain) ** 2 * energy + residual
        mse = (error.sum(1) / energy.sum(1)).mean()
    else:
        mse = torch.mean((x_hat - x) ** 2)
    terms = {"rate": rate, "mse": mse}
    distortion_total = mse
    if direction_weight:
        from .spatial_loss import cross_phase_loss
        terms["phase"] = cross_phase_loss(expand_torch(x_hat, pre), expand_torch(x, pre),
                                          pre.sample_rate)
        distortion_total = mse + direction_weight * terms["phase"]
    return {"loss": rate + lmbda * distortion_total, **terms}


def _lmbda_range(value, levels: int) -> tuple[float, float]:
    """(lmbda at level 0, lmbda at the top level) from a number or a [low, high] pair."""
    pair = value if isinstance(value, (list, tuple)) else [value, value]
    try:
        low, high = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise ConfigError(f"lmbda: a number or [low, high], got {value!r}") from None
    if not 0 < low <= high:
        raise ConfigError(f"lmbda: needs 0 < low <= high, got {value!r}")
    if levels == 1 and low != high:
        raise ConfigError("lmbda: [low, high] needs a variable-rate model (model.rate.levels > 1)")
    return low, high


def expand_torch(y: torch.Tensor, pre) -> torch.Tensor:
    """Differentiable inverse mu-law of the audio preprocessor (full-scale linear amplitude)."""
    y = y.clamp(-1.0, 1.0)
    return torch.sign(y) * torch.expm1(y.abs() * math.log1p(pre.mu)) / (pre.mu * pre.gain)


def quality_db(kind: str, x: torch.Tensor, x_hat: torch.Tensor, pre) -> float:
    """Images: PSNR on [0, 1]. Audio: SNR in mic counts after undoing companding (the DC-blocked
    signal is the reference, as the codec does not restore DC)."""
    if kind == "image":
        mse = torch.mean((x_hat.clamp(0, 1) - x) ** 2).item()
        return 10 * math.log10(1.0 / max(mse, 1e-12))
    signal = noise = 0.0
    for a, b in zip(x, x_hat):
        ref = pre.inverse(a[None], "float64")
        rec = pre.inverse(b[None].clamp(-1, 1), "float64")
        signal += float(np.sum(ref ** 2))
        noise += float(np.sum((ref - rec) ** 2))
    return 10 * math.log10(max(signal, 1e-30) / max(noise, 1e-30))


def cpu_bfloat16_speedup(size: int = 512) -> float:
    """Measured bfloat16 / float32 matrix-multiply throughput on this CPU (~4 with AMX, ~2 with
    AVX512-BF16, far below 1 where bfloat16 is emulated)."""
    def rate(dtype: torch.dtype) -> float:
        a = torch.randn(size, size).to(dtype)
        a @ a
        start, n = time.perf_counter(), 0
        while n < 3 or time.perf_counter() - start < 0.05:
            a @ a
            n += 1
        return n / (time.perf_counter() - start)

    return rate(torch.bfloat16) / rate(torch.float32)


def _autocast_setting(amp, device: torch.device) -> tuple[bool, torch.dtype]:
    """(enabled, dtype) for `amp`: true, false or auto. CUDA: bfloat16 where supported, else
    float16 with a grad scaler. CPU: bfloat16, which `auto` uses only where it measures faster."""
    if amp not in (True, False, "auto"):
        raise ConfigError(f"amp: true, false or auto, got {amp!r}")
    if device.type == "cuda":
        return bool(amp), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type != "cpu" or amp is False:
        return False, torch.bfloat16
    return amp is True or cpu_bfloat16_speedup() > 1.2, torch.bfloat16


# ----------------------------------------------------------------------------- training

class Trainer:
    def __init__(self, config: dict, device: torch.device, d: Dist, resume: bool):
        self.config, self.device, self.d = config, device, d
        self.model_config = config["model"]
        self.kind = self.model_config["kind"]
        if self.kind not in RAW_BITS:
            raise ConfigError(f"model.kind must be one of {sorted(RAW_BITS)}, got {self.kind!r}")
        self.out = Path(config["out"])
        self.state_path = self.out / "last.pt"
        _seed_everything(int(config["seed"]))
        if config["threads"]:
            torch.set_num_threads(int(config["threads"]))

        self.pre = build_preprocessor(self.model_config)
        # audio codecs that line the channels up (dance.align) train on lined-up crops
        self.align_shift = int((self.model_config.get("align") or {}).get("max_shift", 0)) \
            if self.kind == "audio" else 0
        splits = build_datasets(config["data"], self.kind, int(config["seed"]),
                                int(self.model_config["in_channels"]), Preprocess(self.model_config))
        if d.main:
            for note in splits.notes:
                print(f"note: {note}", file=sys.stderr)
        self.train_set, self.val_set = splits.train, splits.val
        self.sampler: RecordingGroupSampler | _ResumableSampler = (
            RecordingGroupSampler(self.train_set.counts, self.train_set.max_open, d, int(config["seed"]))
            if isinstance(self.train_set, IndexItems)
            else _ResumableSampler(self.train_set, d, int(config["seed"])))
        self.loader = DataLoader(self.train_set, batch_size=int(config["batch_size"]), sampler=self.sampler,
                                 num_workers=int(config["num_workers"]), drop_last=False,
                                 pin_memory=device.type == "cuda")
        self.batches_per_epoch = max(1, math.ceil(len(self.sampler) / int(config["batch_size"])))
        self.total_steps = (int(config["epochs"] * self.batches_per_epoch) if config["epochs"]
                            else int(config["steps"]))

        try:
            self.model = build_model(self.model_config).to(device)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"model: {e}") from None
        groups = self.model.parameter_groups()
        # The factorized density starts very wide; its own (higher) learning rate lets the rate
        # fall within a short CPU run instead of after thousands of steps.
        entropy_lr = float(config["entropy_lr"] or config["lr"])
        self.optimizer = torch.optim.Adam([
            {"params": groups["network"], "lr": float(config["lr"]), "base_lr": float(config["lr"])},
            {"params": groups["entropy"], "lr": entropy_lr, "base_lr": entropy_lr}])
        self.aux_optimizer = (torch.optim.Adam(groups["aux"], lr=float(config["aux_lr"]))
                              if groups["aux"] else None)
        aux_ids = {id(p) for p in groups["aux"]}
        self.amp, self.amp_dtype = _autocast_setting(config["amp"], device)
        if d.main:
            print(f"note: autocast {self.amp_dtype if self.amp else 'off'} on {device.type}", file=sys.stderr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.net = self.model
        if d.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # The quantiles get gradients only from aux_loss, outside forward(); DDP must not wait
            # for them. Their gradients are averaged by hand in _aux_step instead.
            DDP._set_params_and_buffers_to_ignore_for_model(
                self.model, [n for n, p in self.model.named_parameters() if id(p) in aux_ids])
            self.net = DDP(self.model, device_ids=[device.index] if device.type == "cuda" else None,
                           broadcast_buffers=False)
        if config["init"]:
            self._init_from(Path(config["init"]))
        self.step = 0
        self.levels = self.model.levels
        self.lmbda_range = _lmbda_range(config["lmbda"], self.levels)
        self.lmbda = self.lmbda_range[1]
        if self.levels > 1 and config["rate_control"]:
            raise ConfigError("rate_control adapts one lmbda: a variable-rate model (rate.levels "
                              "> 1) takes lmbda: [low, high] instead")
        self.distortion = config["distortion"]
        if self.distortion not in ("mse", "relative_linear") or (
                self.distortion == "relative_linear" and self.kind != "audio"):
            raise ConfigError(f"distortion: {self.distortion!r} (mse, or relative_linear for audio)")
        if float(config["direction_weight"]) and (self.kind != "audio" or self.pre.channels < 2):
            raise ConfigError("direction_weight: needs multichannel audio")
        self.rate_ema: float | None = None
        if resume:
            self._load_state()

    # -- state -------------------------------------------------------------------------------
    def _init_from(self, path: Path) -> None:
        """Start from a trained checkpoint's weights; its architecture must match the model's."""
        ckpt = zoo.load_checkpoint(path)
        try:
            self.model.load_network_state(ckpt["state_dict"])
        except ValueError as e:
            raise ConfigError(f"init: {path} does not fit the model ({e})") from None

    def _save_state(self) -> None:
        state = {"model": self.model.network_state(), "optimizer": self.optimizer.state_dict(),
                 "aux_optimizer": self.aux_optimizer.state_dict() if self.aux_optimizer else {},
                 "scaler": self.scaler.state_dict(),
                 "step": self.step, "lmbda": self.lmbda, "rate_ema": self.rate_ema,
                 "rng": _rng_state(), "config": yaml.safe_dump(self.config)}
        tmp = self.state_path.with_name("last.pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.state_path)

    def _load_state(self) -> None:
        if not self.state_path.is_file():
            raise ConfigError(f"--resume: no training state at {self.state_path}")
        try:
            state = torch.load(self.state_path, map_location=self.device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line error
            raise ConfigError(f"{self.state_path}: cannot read training state ({e})") from None
        self.model.load_network_state(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.aux_optimizer:
            self.aux_optimizer.load_state_dict(state["aux_optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.rate_ema = int(state["step"]), state["rate_ema"]
        if self.levels == 1:  # a variable-rate run takes its lmbda range from the config
            self.lmbda = float(state["lmbda"])
        _set_rng_state(state["rng"])

    # -- one step ----------------------------------------------------------------------------
    def _lr_factor(self) -> float:
        return 0.1 ** sum(self.step >= m * self.total_steps for m in self.config["lr_milestones"])

    def _rate_distortion(self, out: dict, x: torch.Tensor,
                         lmbda: float | None = None) -> dict[str, torch.Tensor]:
        return rate_distortion(out, x, self.lmbda if lmbda is None else lmbda, self.distortion,
                               self.pre, float(self.config["gain_weight"]),
                               float(self.config["direction_weight"]))

    def _draw_level(self) -> tuple[float | None, float]:
        """A continuous level for this batch and its lmbda (fixed-rate models: None, lmbda)."""
        if self.levels == 1:
            return None, self.lmbda
        level = random.uniform(0, self.levels - 1)
        return level, geometric(level, self.levels, *self.lmbda_range)

    def _lined_up(self, x: torch.Tensor) -> torch.Tensor:
        if not self.align_shift:
            return x
        from .align import align_batch
        return align_batch(x, self.align_shift, self.pre.sample_rate)

    def _lr(self) -> float:
        return float(self.config["lr"]) * self._lr_factor()

    def gradients(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward and backward of one batch (lined up, on the device): the loss terms; the
        network's gradients (under DDP averaged over the ranks) are left in its parameters."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        points = self.model.training_levels(random) if self.levels > 1 else None
        if points:
            return self._averaged_gradients(x, points)
        level, lmbda = self._draw_level()
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            out = self.net(x, level)
        terms = self._rate_distortion(out, x, lmbda)
        self.scaler.scale(terms["loss"]).backward()
        return terms

    def _averaged_gradients(self, x: torch.Tensor,
                            points: list[tuple[float, float]]) -> dict[str, torch.Tensor]:
        """The loss averaged over the family's (level, λ position) points of one batch
        (`CodecModel.training_levels`), a forward and backward each (one graph in memory at a
        time). Under DDP only the last backward synchronises the accumulated gradients: the
        family lists a point that uses every parameter last."""
        totals: dict[str, torch.Tensor] = {}
        for i, (level, position) in enumerate(points):
            lmbda = geometric(position, self.levels, *self.lmbda_range)
            last = i == len(points) - 1
            with contextlib.nullcontext() if last or self.d.world == 1 else self.net.no_sync():
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                    out = self.net(x, level)
                terms = self._rate_distortion(out, x, lmbda)
                self.scaler.scale(terms["loss"] / len(points)).backward()
            for key, value in terms.items():
                totals[key] = totals.get(key, 0.0) + value.detach() / len(points)
        return totals

    def _train_step(self, x: torch.Tensor) -> dict[str, float]:
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * self._lr_factor()
        x = self._lined_up(x.to(self.device, non_blocking=True))
        terms = self.gradients(x)
        if self.config["clip_max_norm"]:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.config["clip_max_norm"]))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        aux = self._aux_step()
        metrics = {k: float(v.detach()) for k, v in terms.items()}
        metrics["aux_loss"] = aux
        if self.config["rate_control"]:
            metrics["coded_rate"] = self._coded_rate(x)
            self._control_rate(metrics["coded_rate"])
        return metrics

    @torch.no_grad()
    def _coded_rate(self, x: torch.Tensor) -> float:
        """Bits per element of the rounded latents, i.e. what the entropy coder will spend. At low
        rates it sits well below the noisy training rate, so rate control must use this one."""
        self.model.eval()
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            out = self.model(x)
        self.model.train()
        return float(sum(-torch.log2(l.float()).sum() for l in out["likelihoods"].values())
                     / x.numel())

    def _aux_step(self) -> float:
        if self.aux_optimizer is None:
            return 0.0
        self.aux_optimizer.zero_grad(set_to_none=True)
        aux = self.model.aux_loss()
        aux.backward()
        if self.d.world > 1:
            for group in self.aux_optimizer.param_groups:
                for p in group["params"]:
                    dist.all_reduce(p.grad)
                    p.grad /= self.d.world
        self.aux_optimizer.step()
        return float(aux.detach())

    def _control_rate(self, rate: float) -> None:
        """Multiplicative update of lmbda toward the target rate (log-domain integral control)."""
        control = self.config["rate_control"]
        if not control or not math.isfinite(rate):
            return
        self.rate_ema = rate if self.rate_ema is None else 0.9 * self.rate_ema + 0.1 * rate
        if self.step < float(control.get("warmup", 0.1)) * self.total_steps:
            return  # the rate of a fresh model says nothing about its rate once trained
        target = RAW_BITS[self.kind] / float(control["target_ratio"])
        gain = float(control.get("gain", 0.01))
        self.lmbda *= math.exp(gain * (math.log(target) - math.log(max(self.rate_ema, 1e-9))))

    @torch.no_grad()
    def _check_replicas(self) -> None:
        """Every rank must end with rank 0's weights (DDP averages the network's gradients,
        _aux_step the quantiles'); a drift means a parameter escaped both, and is an error."""
        drift = torch.zeros((), device=self.device)
        for p in self.model.parameters():
            reference = p.detach().clone()
            dist.broadcast(reference, 0)
            drift = torch.maximum(drift, (p.detach() - reference).abs().max())
        dist.all_reduce(drift, op=dist.ReduceOp.MAX)
        if drift > 1e-6:
            raise RuntimeError(f"DDP replicas drifted apart (max weight difference {float(drift):.3g})")
        if self.d.main:
            print(f"note: {self.d.world} replicas hold identical weights", file=sys.stderr)

    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """Rate from the likelihoods of rounded latents, mse and PSNR/SNR on the validation set."""
        if self.val_set is None or len(self.val_set) == 0:
            return None
        self.model.eval()
        loader = DataLoader(self.val_set, batch_size=int(self.config["batch_size"]), shuffle=False,
                            num_workers=int(self.config["num_workers"]), generator=torch.Generator())
        totals = {"rate": 0.0, "mse": 0.0, "quality_db": 0.0}
        count = 0
        for x in loader:
            x = self._lined_up(x.to(self.device))
            out = self.model(x)
            terms = self._rate_distortion(out, x)
            n = len(x)
            totals["rate"] += float(terms["rate"]) * n
            totals["mse"] += float(terms["mse"]) * n
            quality = quality_db(self.kind, x.float().cpu(), out["x_hat"].float().cpu(), self.pre)
            totals["quality_db"] += quality * n
            count += n
        metrics = {k: v / count for k, v in totals.items()}
        metrics["loss"] = metrics["rate"] + self.lmbda * metrics["mse"]
        metrics["ratio"] = RAW_BITS[self.kind] / max(metrics["rate"], 1e-12)
        return metrics

    # -- loop --------------------------------------------------------------------------------
    def run(self) -> dict:
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        cfg = self.config
        log = writer = None
        if self.d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            new_log = not (self.out / "log.csv").is_file() or self.step == 0
            log_file = open(self.out / "log.csv", "w" if new_log else "a", newline="")
            log = csv.writer(log_file)
            if new_log:
                log.writerow(["step", "split", "loss", "rate_bpe", "mse", "ratio", "quality_db",
                              "lmbda", "lr", "aux_loss", "seconds", "coded_rate_bpe"])
            writer = SummaryWriter(str(self.out / "tensorboard"))
        start = time.monotonic()
        limit = cfg["time_limit_minutes"]
        quality_name = "psnr_db" if self.kind == "image" else "snr_db"
        val_metrics = None
        bar = tqdm(total=self.total_steps, initial=self.step,
                   desc=f"train {self.model_config.get('name', self.kind)}",
                   unit="step", disable=not self.d.main, dynamic_ncols=True)
        stopped_early = False
        while self.step < self.total_steps and not stopped_early:
            epoch, done = divmod(self.step, self.batches_per_epoch)
            self.sampler.set_position(epoch, done * int(cfg["batch_size"]))
            # worker seeds from a per-epoch generator: creating an iterator must not draw from the
            # global RNG, or a resumed run would diverge from an uninterrupted one
            self.loader.generator = torch.Generator().manual_seed(int(cfg["seed"]) * 100_003 + epoch)
            for x in self.loader:
                metrics = self._train_step(x)
                self.step += 1
                bar.update(1)
                elapsed = time.monotonic() - start
                if self.d.main and (self.step % int(cfg["log_every"]) == 0 or self.step == self.total_steps):
                    ratio = RAW_BITS[self.kind] / max(metrics["rate"], 1e-12)
                    bar.set_postfix(loss=f"{metrics['loss']:.4g}", bpe=f"{metrics['rate']:.4f}",
                                    coded=f"{metrics.get('coded_rate', float('nan')):.4f}",
                                    ratio=f"{ratio:.0f}", mse=f"{metrics['mse']:.3g}",
                                    lmbda=f"{self.lmbda:.3g}")
                    log.writerow([self.step, "train", metrics["loss"], metrics["rate"], metrics["mse"],
                                  ratio, "", self.lmbda, self._lr(), metrics["aux_loss"], f"{elapsed:.1f}",
                                  metrics.get("coded_rate", "")])
                    for k in ("loss", "rate", "mse", "aux_loss", "coded_rate"):
                        if k in metrics:
                            writer.add_scalar(f"train/{k}", metrics[k], self.step)
                    writer.add_scalar("train/lmbda", self.lmbda, self.step)
                stopped_early = bool(limit) and elapsed > float(limit) * 60
                last = self.step >= self.total_steps or stopped_early
                if self.d.main and (self.step % int(cfg["val_every"]) == 0 or last):
                    val_metrics = self.validate()
                    if val_metrics:
                        log.writerow([self.step, "val", val_metrics["loss"], val_metrics["rate"],
                                      val_metrics["mse"], val_metrics["ratio"], val_metrics["quality_db"],
                                      self.lmbda, self._lr(), "", f"{elapsed:.1f}"])
                        for k, v in val_metrics.items():
                            writer.add_scalar(f"val/{quality_name if k == 'quality_db' else k}", v, self.step)
                        bar.write(f"step {self.step}: val rate {val_metrics['rate']:.4f} bits/element "
                                  f"(~{val_metrics['ratio']:.0f}:1 before container), "
                                  f"{quality_name} {val_metrics['quality_db']:.2f} dB")
                if self.d.main and (self.step % int(cfg["checkpoint_every"]) == 0 or last):
                    self._save_state()
                    log_file.flush()
                if last:
                    break
        bar.close()
        if self.d.world > 1:
            self._check_replicas()
        if stopped_early and self.d.main:
            print(f"note: time limit of {limit} min reached at step {self.step}", file=sys.stderr)
        summary = {"steps": self.step, "lmbda": self.lmbda, "seconds": round(time.monotonic() - start, 1),
                   "stopped_early": stopped_early}
        if val_metrics:
            summary.update({f"val_{quality_name if k == 'quality_db' else k}": v
                            for k, v in val_metrics.items()})
        if self.d.main:
            self.model.update(force=True)
            model_config = {**self.model_config, "lmbda": self.lmbda if self.levels == 1
                            else list(self.lmbda_range)}
            extra = {"train": yaml.safe_dump(cfg, sort_keys=False), "summary": summary}
            digest = zoo.save_checkpoint(cfg["final"], self.model, model_config, extra=extra)
            summary["hash"] = digest
            (self.out / "summary.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
            print(f"wrote {cfg['final']} (hash {digest[:12]}); steps {self.step}, lmbda {self.lmbda:.4g}")
            log_file.close()
            writer.close()
        return summary


def main(args) -> int:
    """Entry point of `dance train` (args: config, set, resume, device)."""
    d = Dist()
    try:
        config = load_config(args.config, list(getattr(args, "set", None) or []))
        d, device = _init_distributed(getattr(args, "device", None))
        Trainer(config, device, d, bool(getattr(args, "resume", False))).run()
    except (ConfigError, DataError, zoo.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130
    finally:
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dance.train")
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--device")
    sys.exit(main(parser.parse_args()))
