"""State dicts of the papers' reference implementations, mapped onto mdl's ResNet-26 networks.

Published checkpoints of the decathlon papers are multi-task networks whose per-task modules sit in
``nn.ModuleList``s indexed by task. The key names below are written from the reference code's module
structure (read in the stored public copies of the repositories):

``rebuffi2018`` -- srebuffi/residual_adapters ``models.py`` (``ResNet``, ``BasicBlock``, ``conv_task``,
``conv1x1``), arch ``resnet26``::

    pre_layers_conv.conv.weight                       stem 3x3 conv (shared)
    pre_layers_conv.bns.{t}.*                         stem BN of task t
    pre_layers_conv.parallel_conv.{t}.conv.weight     parallel adapter (mode parallel_adapters)
    pre_layers_conv.bns.{t}.0.conv.{0,1}.* / .1.*     series adapter BN, 1x1 / output BN (series_adapters)
    layer{s}.{b}.conv1.<as above>                     first conv of block b of stage s
    layer{s}.{b}.conv2.1.<as above>                   second conv (``conv2 = Sequential(ReLU, conv_task)``)
    end_bns.{t}.0.*                                   end BN (``Sequential(BN, ReLU)``)
    linears.{t}.*                                     classifier of task t

``guo2019`` -- yunhuiguo/Depthwise_Convolution_for_Multiple_Domain_Learning ``models/resnet.py``
(``FlatResNet26``) and ``models/base.py`` (``SeparableConv2d``, ``BasicBlock``), arch ``resnet26_dw``::

    conv1.depthwise.{t}.weight / conv1.pointwise.weight                 stem (dw per task, pw shared)
    pre_bn.{t}.*                                                         stem BN
    blocks.{s}.{b}.SeparableConv2d{i}.depthwise.{t}.weight / .pointwise.weight
    blocks.{s}.{b}.bns{i}.{t}.*
    bns.{t}.0.*                                                          end BN (``Sequential(BN, ReLU)``)
    fcs.{t}.*                                                            classifier

Every reference key is either shared (-> the trunk) or belongs to task t (-> that domain's tensors);
a per-domain part that the reference shares (Guo's last pointwise conv, which their training script
trains per dataset) is copied from the shared tensor. Mapping is strict both ways: an unknown or
missing key is an error naming it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch

from .wrappers import NBT

Mapped = tuple[str, int | None]  # (mdl key, task index or None for shared)


def _rebuffi_conv(prefix: tuple[str, str], rest: str) -> Mapped | None:
    """Keys inside one ``conv_task`` (conv + per-task BN / adapters), onto ``prefix`` = (conv path, BN path)."""
    conv, bn = prefix
    m = re.fullmatch(r"conv\.weight", rest)
    if m:
        return f"{conv}.weight", None
    m = re.fullmatch(r"parallel_conv\.(\d+)\.conv\.weight", rest)
    if m:
        return f"{conv}.adapter.weight", int(m[1])
    m = re.fullmatch(r"bns\.(\d+)\.0\.conv\.0\.(\w+)", rest)  # series: BN inside the adapter
    if m:
        return f"{conv}.adapter.bn.{m[2]}", int(m[1])
    m = re.fullmatch(r"bns\.(\d+)\.0\.conv\.1\.weight", rest)  # series: the adapter's 1x1
    if m:
        return f"{conv}.adapter.conv.weight", int(m[1])
    m = re.fullmatch(r"bns\.(\d+)\.1\.(\w+)", rest)  # series: the BN after the adapter
    if m:
        return f"{bn}.{m[2]}", int(m[1])
    m = re.fullmatch(r"bns\.(\d+)\.(\w+)", rest)
    if m:
        return f"{bn}.{m[2]}", int(m[1])
    return None


def _rebuffi(key: str) -> Mapped | None:
    if key.startswith("pre_layers_conv."):
        return _rebuffi_conv(("stem.conv", "stem.bn"), key[len("pre_layers_conv."):])
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(conv1|conv2\.1)\.(.+)", key)
    if m:
        s, b, which, rest = m.groups()
        i = "1" if which == "conv1" else "2"
        return _rebuffi_conv((f"s{s}.b{b}.conv{i}", f"s{s}.b{b}.bn{i}"), rest)
    m = re.fullmatch(r"end_bns\.(\d+)\.0\.(\w+)", key)
    if m:
        return f"end_bn.{m[2]}", int(m[1])
    m = re.fullmatch(r"linears\.(\d+)\.(weight|bias)", key)
    if m:
        return f"head.{m[2]}", int(m[1])
    return None


def _guo(key: str) -> Mapped | None:
    m = re.fullmatch(r"conv1\.depthwise\.(\d+)\.weight", key)
    if m:
        return "stem.dw.weight", int(m[1])
    if key == "conv1.pointwise.weight":
        return "stem.pw.weight", None
    m = re.fullmatch(r"pre_bn\.(\d+)\.(\w+)", key)
    if m:
        return f"stem.bn.{m[2]}", int(m[1])
    m = re.fullmatch(r"blocks\.(\d)\.(\d+)\.SeparableConv2d(\d)\.depthwise\.(\d+)\.weight", key)
    if m:
        s, b, i, t = m.groups()
        return f"s{int(s) + 1}.b{b}.dw{i}.weight", int(t)
    m = re.fullmatch(r"blocks\.(\d)\.(\d+)\.SeparableConv2d(\d)\.pointwise\.weight", key)
    if m:
        s, b, i = m.groups()
        return f"s{int(s) + 1}.b{b}.pw{i}.weight", None
    m = re.fullmatch(r"blocks\.(\d)\.(\d+)\.bns(\d)\.(\d+)\.(\w+)", key)
    if m:
        s, b, i, t, leaf = m.groups()
        return f"s{int(s) + 1}.b{b}.bn{i}.{leaf}", int(t)
    m = re.fullmatch(r"bns\.(\d+)\.0\.(\w+)", key)
    if m:
        return f"end_bn.{m[2]}", int(m[1])
    m = re.fullmatch(r"fcs\.(\d+)\.(weight|bias)", key)
    if m:
        return f"head.{m[2]}", int(m[1])
    return None


def _rebuffi_method(keys) -> str:
    if any(".parallel_conv." in k for k in keys):
        return "parallel-adapter"
    if any(re.search(r"\.bns\.\d+\.0\.conv\.1\.weight$", k) for k in keys):
        return "series-adapter"
    return "bn"


@dataclass(frozen=True)
class ReferenceLayout:
    name: str
    arch: str
    base_channels: int                # the stem's output channels at width 1 (gives the width factor)
    stem_out_key: str                 # a reference key whose dim 0 is the stem's output channels
    rename: Callable[[str], Mapped | None]
    method: Callable[[list[str]], str]
    read_from: str


LAYOUTS = {
    "rebuffi2018": ReferenceLayout("rebuffi2018", "resnet26", 32, "pre_layers_conv.conv.weight", _rebuffi,
                                   _rebuffi_method, "srebuffi/residual_adapters models.py"),
    "guo2019": ReferenceLayout("guo2019", "resnet26_dw", 64, "conv1.pointwise.weight", _guo, lambda keys: "dw",
                               "yunhuiguo/Depthwise_Convolution_for_Multiple_Domain_Learning models/resnet.py, "
                               "models/base.py"),
}


@dataclass
class ReferenceCheckpoint:
    """A reference state dict split into mdl's terms."""

    layout: str
    arch: str
    method: str
    width: float
    shared: dict[str, torch.Tensor]
    tasks: list[dict[str, torch.Tensor]]  # per task index, the task's own tensors in mdl keys

    def num_classes(self, t: int) -> int:
        return int(self.tasks[t]["head.bias"].shape[0])


def split_reference_state(state: dict[str, torch.Tensor], layout: str) -> ReferenceCheckpoint:
    """Rename a reference state dict (``net.state_dict()`` of their model) into shared and per-task
    tensors. Raises ValueError naming the first key it cannot place."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown reference layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    spec = LAYOUTS[layout]
    if spec.stem_out_key not in state:
        raise ValueError(f"not a {layout} state dict: it has no {spec.stem_out_key!r} "
                         f"(the layout of {spec.read_from})")
    shared: dict[str, torch.Tensor] = {}
    tasks: dict[int, dict[str, torch.Tensor]] = {}
    source: dict[tuple[int, str], str] = {}  # (task, mdl key) -> the reference key it came from
    for key, value in state.items():
        if key.endswith(NBT):
            continue
        mapped = spec.rename(key)
        if mapped is None:
            raise ValueError(f"{layout}: unexpected key {key!r} (not part of {spec.read_from})")
        name, task = mapped
        (shared if task is None else tasks.setdefault(task, {}))[name] = value
        if task is not None:
            source[task, name] = key
    if sorted(tasks) != list(range(len(tasks))) or not tasks:
        raise ValueError(f"{layout}: task indices {sorted(tasks)} are not 0..T-1")
    for t, own in tasks.items():  # every task's classifier whole (its class count is read from it)
        for have, want in (("head.weight", "head.bias"), ("head.bias", "head.weight")):
            if want not in own:
                near = source.get((t, have))
                key = f"{near.rsplit('.', 1)[0]}.{want.split('.')[1]}" if near else f"task {t}'s classifier {want.split('.')[1]}"
                raise ValueError(f"{layout}: missing key {key!r} (task {t}'s classifier)")
    width = state[spec.stem_out_key].shape[0] / spec.base_channels
    return ReferenceCheckpoint(layout, spec.arch, spec.method(list(state)), float(width), shared,
                               [tasks[t] for t in range(len(tasks))])


def load_reference(net, ckpt: ReferenceCheckpoint, names: list[str]) -> None:
    """Load ``ckpt`` into a MultiDomainNet built for (ckpt.arch, ckpt.method, ckpt.width): the shared
    tensors into the trunk, task t into domain ``names[t]`` (created if missing). Strict."""
    if len(names) != len(ckpt.tasks):
        raise ValueError(f"the {ckpt.layout} checkpoint holds {len(ckpt.tasks)} task(s); got {len(names)} name(s)")
    for name, own in zip(names, ckpt.tasks):
        if name not in net.domains:
            net.add_domain(name, int(own["head.bias"].shape[0]))
        wanted = [k for k in net.domain_state_dict(name) if not k.endswith(NBT)]
        missing = [k for k in wanted if k not in own and k not in ckpt.shared]
        if missing:
            raise ValueError(f"{ckpt.layout}: the checkpoint has no tensor for {missing[0]!r} of method "
                             f"{ckpt.method!r} (task {names.index(name)})")
        net.load_domain_state_dict(name, {k: own[k] if k in own else ckpt.shared[k] for k in wanted})
        extra = set(own) - set(wanted)
        if extra:
            raise ValueError(f"{ckpt.layout}: task tensors {sorted(extra)[:3]} have no place under {ckpt.method!r}")
    net.load_shared_state_dict({k: v for k, v in ckpt.shared.items() if k in net.shared_state_dict()})
    unused = set(ckpt.shared) - set(net.shared_state_dict()) - {k for n in names for k in net.domain_state_dict(n)}
    if unused:
        raise ValueError(f"{ckpt.layout}: shared tensors {sorted(unused)[:3]} have no place in {ckpt.arch!r}")
