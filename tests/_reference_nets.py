"""Test doubles of the papers' reference networks: the same module structure (hence the same state-dict
keys) and the same forward computation as the reference code, written here from reading it:

* ``RebuffiResNet26`` -- srebuffi/residual_adapters ``models.py``: ``conv_task`` (3x3 conv, per-task
  ``bns``, per-task ``parallel_conv`` of ``conv1x1`` in parallel mode, or per-task
  ``Sequential(conv1x1, BN)`` in series mode where ``conv1x1`` = ``Sequential(BN, 1x1)`` plus identity),
  ``BasicBlock`` (``conv1``, ``conv2 = Sequential(ReLU, conv_task)``, ``AvgPool2d(2)`` + zero channels
  shortcut, ReLU), ``ResNet`` (``pre_layers_conv`` with no ReLU, ``layer1..3``, ``end_bns`` =
  ``Sequential(BN, ReLU)`` per task, ``linears``).
* ``GuoResNet26`` -- yunhuiguo/Depthwise_Convolution_for_Multiple_Domain_Learning ``models/base.py``
  (``SeparableConv2d``: per-task ``depthwise`` list, shared ``pointwise``; ``BasicBlock``: separable conv,
  per-task ``bns1``, ReLU, separable conv, per-task ``bns2``) and ``models/resnet.py`` (``FlatResNet26``:
  separable stem ``conv1`` + per-task ``pre_bn`` with no ReLU, ``blocks`` / ``ds`` (``DownsampleB``), per-task
  ``bns`` = ``Sequential(BN, ReLU)``, ``fcs``).

The task is an argument of forward here (the references read a global ``config_task.task``).
"""
import torch
import torch.nn.functional as F
from torch import nn


def _conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _zero_pad_shortcut(x):
    r = F.avg_pool2d(x, 2)
    return torch.cat((r, r * 0), 1)


class _Series1x1(nn.Module):  # reference conv1x1 in series mode: Sequential(BN, 1x1) + identity
    def __init__(self, planes):
        super().__init__()
        self.conv = nn.Sequential(nn.BatchNorm2d(planes), nn.Conv2d(planes, planes, 1, bias=False))

    def forward(self, x):
        return self.conv(x) + x


class _Parallel1x1(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x):
        return self.conv(x)


class ConvTask(nn.Module):
    def __init__(self, cin, cout, stride, tasks, mode):
        super().__init__()
        self.mode = mode
        self.conv = _conv3x3(cin, cout, stride)
        if mode == "series":
            self.bns = nn.ModuleList([nn.Sequential(_Series1x1(cout), nn.BatchNorm2d(cout)) for _ in range(tasks)])
        else:
            if mode == "parallel":
                self.parallel_conv = nn.ModuleList([_Parallel1x1(cin, cout, stride) for _ in range(tasks)])
            self.bns = nn.ModuleList([nn.BatchNorm2d(cout) for _ in range(tasks)])

    def forward(self, x, t):
        y = self.conv(x)
        if self.mode == "parallel":
            y = y + self.parallel_conv[t](x)
        return self.bns[t](y)


class _ReluThen(nn.Sequential):
    def forward(self, x, t):
        return self[1](F.relu(x), t)


class RebuffiBlock(nn.Module):
    def __init__(self, cin, cout, stride, shortcut, tasks, mode):
        super().__init__()
        self.conv1 = ConvTask(cin, cout, stride, tasks, mode)
        self.conv2 = _ReluThen(nn.ReLU(), ConvTask(cout, cout, 1, tasks, mode))
        self.shortcut = shortcut

    def forward(self, x, t):
        y = self.conv2(self.conv1(x, t), t)
        return F.relu(y + (_zero_pad_shortcut(x) if self.shortcut else x))


class RebuffiResNet26(nn.Module):
    def __init__(self, num_classes, factor=1.0, mode="parallel"):
        super().__init__()
        tasks = len(num_classes)
        c = int(32 * factor)
        self.pre_layers_conv = ConvTask(3, c, 1, tasks, mode)
        for i, planes in enumerate((64, 128, 256), start=1):
            planes = int(planes * factor)
            blocks = [RebuffiBlock(c, planes, 2, 1, tasks, mode)] + \
                     [RebuffiBlock(planes, planes, 1, 0, tasks, mode) for _ in range(3)]
            setattr(self, f"layer{i}", nn.ModuleList(blocks))  # Sequential in the reference: same keys
            c = planes
        self.end_bns = nn.ModuleList([nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()) for _ in range(tasks)])
        self.linears = nn.ModuleList([nn.Linear(c, k) for k in num_classes])

    def forward(self, x, t):
        x = self.pre_layers_conv(x, t)
        for i in (1, 2, 3):
            for block in getattr(self, f"layer{i}"):
                x = block(x, t)
        x = self.end_bns[t](x).mean((2, 3))
        return self.linears[t](x)


class Separable(nn.Module):
    def __init__(self, cin, cout, stride, tasks):
        super().__init__()
        self.depthwise = nn.ModuleList([nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
                                        for _ in range(tasks)])
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x, t):
        return self.pointwise(self.depthwise[t](x))


class GuoBlock(nn.Module):
    def __init__(self, cin, cout, tasks, stride=1):
        super().__init__()
        self.SeparableConv2d1 = Separable(cin, cout, stride, tasks)
        self.bns1 = nn.ModuleList([nn.BatchNorm2d(cout) for _ in range(tasks)])
        self.SeparableConv2d2 = Separable(cout, cout, 1, tasks)
        self.bns2 = nn.ModuleList([nn.BatchNorm2d(cout) for _ in range(tasks)])

    def forward(self, x, t):
        x = F.relu(self.bns1[t](self.SeparableConv2d1(x, t)))
        return self.bns2[t](self.SeparableConv2d2(x, t))


class GuoResNet26(nn.Module):
    def __init__(self, num_classes, factor=1.0):
        super().__init__()
        tasks = len(num_classes)
        c = int(64 * factor)
        self.conv1 = Separable(3, c, 1, tasks)
        self.pre_bn = nn.ModuleList([nn.BatchNorm2d(c) for _ in range(tasks)])
        blocks = []
        for planes in (128, 256, 512):
            planes = int(planes * factor)
            blocks.append(nn.ModuleList([GuoBlock(c, planes, tasks, 2)] + [GuoBlock(planes, planes, tasks) for _ in range(3)]))
            c = planes
        self.blocks = nn.ModuleList(blocks)
        self.bns = nn.ModuleList([nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()) for _ in range(tasks)])
        self.fcs = nn.ModuleList([nn.Linear(c, k) for k in num_classes])

    def forward(self, x, t):
        x = self.pre_bn[t](self.conv1(x, t))
        for stage in self.blocks:
            for b, block in enumerate(stage):
                residual = _zero_pad_shortcut(x) if b == 0 else x
                x = F.relu(residual + block(x, t))
        x = self.bns[t](x).mean((2, 3))
        return self.fcs[t](x)


def randomise(net: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BN statistic random (the references' own init leaves BN at identity and
    adapters at zero would hide mapping mistakes)."""
    g = torch.Generator().manual_seed(seed)
    net.double()
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g, dtype=torch.float64) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64) * 0.3)
    return net.eval()
