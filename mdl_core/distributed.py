"""Training under torchrun: torch.distributed + DistributedDataParallel + DistributedSampler (+ SyncBatchNorm).

A process started by ``torchrun`` (or ``python -m torch.distributed.run``) finds RANK, WORLD_SIZE and
LOCAL_RANK in its environment; `init()` then joins the process group (``nccl`` on CUDA, ``gloo`` on CPU).
A plain ``mdl`` process has none of them: nothing here creates a process group, and every function
below is a no-op that returns its input, so single-process runs are exactly what they were.

What the training loop gets from here (``mdl.core.training.fit``):
  * `wrap(net)`: the network in ``DistributedDataParallel``. DDP's reducer holds only the parameters
    with ``requires_grad`` (the domain's own, or a gate's): the frozen trunk is never all-reduced. With
    ``sync_bn`` the per-domain norms (the modules in each wrapper's ``domains`` ModuleDict) become
    ``nn.SyncBatchNorm`` (timm's converter, so timm's BatchNormAct2d keeps its activation); shared norms
    always run on their frozen statistics and are left alone.
  * `shard_loaders(train, val)`: the same datasets through a ``DistributedSampler`` each. The training
    sampler is seeded with ``seed * 100_003`` and `set_epoch` (the loop calls it) adds the epoch, as
    the single-process shuffle is seeded. ``--batch-size`` is the GLOBAL batch: each rank loads
    batch_size / world_size samples per step, so the lr means the same on any number of processes.
  * `real_samples(loader, n)`: which of a rank's evaluation samples are not DistributedSampler's
    padding (it repeats the first indices to even out the ranks); `sum_over_shards(loader, ...)`:
    all_reduce sums of counts taken over such a loader.
  * `sync_buffers(net)`: rank 0's buffers (BN running statistics) to every rank before evaluating, so
    every rank evaluates, keeps and (rank 0) registers the same model.

Only rank 0 writes (checkpoints, the registry) and prints; `all_ok()` is the barrier every rank
passes before rank 0 registers anything, so a rank that failed (or was killed) leaves nothing behind.

Tests only: ``MDL_TEST_KILL_RANK=R@STEP`` makes rank R SIGKILL itself at its STEP-th training forward
(default STEP 1), to check that a dead peer ends the run non-zero with nothing registered.
"""
from __future__ import annotations

import contextlib
import os
import signal
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

TIMEOUT_ENV = "MDL_DIST_TIMEOUT"  # seconds a collective may wait for a peer (default 1800, torch's gloo default)
KILL_ENV = "MDL_TEST_KILL_RANK"  # tests only: "R@STEP"
_state: dict = {"sync_bn": False, "joined": False}  # joined: this process was in a torchrun group


# --- who am I ----------------------------------------------------------------------------------------


def launched() -> bool:
    """Started by torchrun (its environment variables are set)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def backend() -> str | None:
    return dist.get_backend() if active() else None


# --- the process group -------------------------------------------------------------------------------


def init(sync_bn: bool = False) -> bool:
    """Join torchrun's process group (nccl with CUDA, else gloo); False (and nothing done) outside torchrun."""
    _state["sync_bn"] = bool(sync_bn)
    if not launched() or active():
        return active()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return True


def shutdown() -> None:
    """Leave the process group (see `exit_process` for why that is not the whole teardown)."""
    _state["sync_bn"] = False
    if active():
        dist.destroy_process_group()
        _state["joined"] = True


def exit_process(code: int) -> None:
    """End a process that joined a torchrun group: Python's exit handlers, flushed streams, then
    ``os._exit`` without the interpreter's finalisation.

    Why: DistributedDataParallel leaves Python references to the process group behind after the DDP
    object itself is gone (measured with torch 2.14: 10 per DDP construction, in a 20-line script as in
    mdl), so `destroy_process_group` cannot free the gloo group and its three C++ threads
    (gloo_tcp_loop, 2x pt_gloo_runloop) keep running. They were then torn down during interpreter
    finalisation, racing with the peer's own teardown closing its sockets; about one run in a hundred a
    rank died there with SIGABRT ("terminate called without an active exception", a joinable
    std::thread destroyed) after the run had registered its result, and torchrun reported the job
    failed. Nothing is left to do at that point (results registered and printed, files closed by
    their owners, atexit handlers run here), so the process ends without the C++ teardown."""
    import atexit
    import sys

    if not _state["joined"]:
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can be said
            pass
    os._exit(code)


def describe(batch_size: int) -> dict:
    """What a run's config records about how it ran: the global batch and its split over the ranks."""
    return {"world_size": world_size(), "backend": backend(), "global_batch_size": int(batch_size),
            "per_rank_batch_size": per_rank_batch(batch_size), "sync_bn": _state["sync_bn"] and active()}


def per_rank_batch(batch_size: int) -> int:
    w = world_size()
    if batch_size % w:
        raise ValueError(f"--batch-size {batch_size} is the global batch; it must split evenly over the "
                         f"{w} processes (a multiple of {w})")
    return batch_size // w


# --- collectives ---------------------------------------------------------------------------------------


def sum_over_ranks(*values: float) -> tuple[float, ...]:
    """Element-wise sums over every rank (float64); the values themselves when single-process."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return tuple(t.tolist())


def _collective_device() -> torch.device:
    """nccl reduces CUDA tensors only (this rank's GPU); gloo CPU ones."""
    return torch.device("cuda", torch.cuda.current_device()) if backend() == "nccl" else torch.device("cpu")


def all_ok() -> None:
    """Every rank must reach this point: a barrier (an all_reduce) that raises if a peer failed."""
    if active():
        t = torch.ones(1, device=_collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        if t.item() != 1:
            raise RuntimeError("another process of this run failed")


@contextlib.contextmanager
def rank_zero_first():
    """Rank 0 runs the block first (e.g. a registry write such as importing the default trunk), then the others."""
    if active() and not is_main():
        dist.barrier()
    yield
    if active() and is_main():
        dist.barrier()


def sync_buffers(net: nn.Module) -> None:
    """Rank 0's buffers (BN running statistics) to every rank, in place."""
    if active() and world_size() > 1:
        for b in net.buffers():
            if b.numel():
                dist.broadcast(b.data, src=0)


# --- data ----------------------------------------------------------------------------------------------


def shard_loaders(train, val, seed: int):
    """The train and val DataLoaders rebuilt on DistributedSamplers (per-rank batch = global / world);
    the same loaders when single-process."""
    if not active():
        return train, val
    from torch.utils.data import DataLoader, DistributedSampler

    b = per_rank_batch(train.batch_size)
    tsamp = DistributedSampler(train.dataset, shuffle=True, seed=int(seed) * 100_003, drop_last=False)
    lone = len(tsamp) % b == 1 and len(tsamp) > 1  # a last batch of one sample gives no BN statistics: drop it
    kw = {"num_workers": train.num_workers, "persistent_workers": train.num_workers > 0}
    train = DataLoader(train.dataset, batch_size=b, sampler=tsamp, drop_last=lone, **kw)
    if val is None:  # training on train+val: nothing to validate on
        return train, None
    vsamp = DistributedSampler(val.dataset, shuffle=False, drop_last=False)
    val = DataLoader(val.dataset, batch_size=val.batch_size, sampler=vsamp, **kw)
    return train, val


def eval_loader(loader):
    """An evaluation DataLoader split over the ranks (pair with `real_samples` + `sum_over_ranks`)."""
    if not active():
        return loader
    from torch.utils.data import DataLoader, DistributedSampler

    return DataLoader(loader.dataset, batch_size=loader.batch_size, num_workers=loader.num_workers,
                      sampler=DistributedSampler(loader.dataset, shuffle=False, drop_last=False))


def sum_over_shards(loader, *values: float) -> tuple[float, ...]:
    """`sum_over_ranks` for counts taken over a loader split over the ranks (a DistributedSampler); a
    loader every rank reads whole (or any loader single-process) is counted once."""
    from torch.utils.data import DistributedSampler

    if isinstance(getattr(loader, "sampler", None), DistributedSampler):
        return sum_over_ranks(*values)
    return values


def real_samples(loader, n: int) -> torch.Tensor:
    """Mask over this rank's `n` evaluation samples: False for DistributedSampler's padding. Its rank r
    gets positions r, r + W, r + 2W, ... of range(len) + the first few indices again."""
    from torch.utils.data import DistributedSampler

    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.shuffle:
        return torch.ones(n, dtype=torch.bool)
    positions = sampler.rank + sampler.num_replicas * torch.arange(n)
    return positions < len(sampler.dataset)


# --- the network -----------------------------------------------------------------------------------------


def _convert_sync_bn(net: nn.Module, cpu: bool) -> None:
    """Per-domain BN -> SyncBatchNorm (timm's converter on CUDA, so BatchNormAct2d keeps its activation;
    the CPU forward below on CPU). Shared norms run on frozen statistics and stay as they are."""
    if cpu:
        convert = _cpu_sync_bn
    else:
        try:
            from timm.layers import convert_sync_batchnorm as convert
        except ImportError:  # pragma: no cover - timm is a dependency
            convert = nn.SyncBatchNorm.convert_sync_batchnorm
    wrappers = getattr(net, "wrappers", None)
    if wrappers is None:  # not a MultiDomainNet: every BN
        convert(net)
        return
    for w in wrappers.values():  # per-domain copies only; the new modules keep the same Parameter objects
        for name in list(w.domains):
            w.domains[name] = convert(w.domains[name])


def wrap(net: nn.Module) -> nn.Module:
    """`net` in DistributedDataParallel (call after requires_grad marks what trains); `net` itself when
    single-process. With ``sync_bn``, per-domain BN layers become SyncBatchNorm first."""
    if not active():
        return net
    cuda = next(net.parameters()).device.type == "cuda"
    if _state["sync_bn"]:
        _convert_sync_bn(net, cpu=not cuda)
    # Buffers (BN statistics) are broadcast from rank 0 at every forward (DDP's default).
    # find_unused_parameters stays False: every trainable parameter takes part in each forward (checked
    # for every method on resnet26, resnet26_dw, Lite0, MobileNetV3 and ConvNeXt, gates included).
    model = nn.parallel.DistributedDataParallel(net, device_ids=[torch.cuda.current_device()] if cuda else None)
    _kill_hook(model)
    return model


def _kill_hook(model: nn.Module) -> None:
    """Tests only (MDL_TEST_KILL_RANK=R@STEP): rank R SIGKILLs itself at its STEP-th training forward."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    r, _, step = spec.partition("@")
    if int(r) != rank():
        return
    calls = {"n": 0}

    def hook(module, args):
        calls["n"] += 1
        if calls["n"] >= int(step or 1):
            os.kill(os.getpid(), signal.SIGKILL)

    model.register_forward_pre_hook(hook)


# --- SyncBatchNorm on CPU ----------------------------------------------------------------------------------


class _CpuSyncBatchNorm:
    """torch's SyncBatchNorm is CUDA-only (its kernels refuse CPU tensors and DDP refuses SyncBatchNorm
    modules on CPU), so on CPU (gloo) a BN layer gets this forward instead, mixed into its own class: in
    train mode the batch mean and biased variance over every rank's samples (two passes, as a
    single-process BN computes them) through torch.distributed.nn's differentiable all_reduce, whose
    backward all-reduces the gradients as SyncBatchNorm's does; the unbiased variance for the running
    statistics. In eval mode, or alone, the layer's own forward. timm's BatchNormAct2d keeps its
    dropout and activation after the norm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active() and world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        c = x.shape[1]
        total = all_reduce(torch.cat([x.sum(dims), x.new_tensor([x.numel() / c])]))
        n = total[-1]
        mean = total[:-1] / n
        var = all_reduce((x - mean.view(shape)).pow(2).sum(dims)) / n
        y = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=momentum)
        if hasattr(self, "act") and hasattr(self, "drop"):  # timm's BatchNormAct2d: norm, dropout, activation
            y = self.act(self.drop(y))
        return y


def all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Differentiable all_reduce sum (its backward all-reduces the gradient): torch.distributed.nn's,
    public and stable, which newer torch marks deprecated in favour of a private module."""
    import warnings

    from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return differentiable_all_reduce(t)


_variants: dict = {}


def _cpu_sync_bn(module: nn.Module) -> nn.Module:
    """Every BatchNorm under `module` (and `module` itself) gets the synchronised CPU forward, in place."""
    from torch.nn.modules.batchnorm import _BatchNorm

    for m in module.modules():
        cls = type(m)
        if isinstance(m, _BatchNorm) and not isinstance(m, _CpuSyncBatchNorm):
            if cls not in _variants:
                _variants[cls] = type(f"CpuSync{cls.__name__}", (_CpuSyncBatchNorm, cls), {})
            m.__class__ = _variants[cls]
    return module
