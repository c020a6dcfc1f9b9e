"""Functional pieces of the mixed-domain paths: per-sample depthwise convolution (paper eq. 7), the
soft-shared depthwise mix (eq. 8) and per-sample normalisation affines, for any conv/norm module the
trunk uses (PyTorch's own, and timm's ``Conv2dSame`` / ``BatchNormAct2d`` / ``LayerNorm2d``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _tf_same(conv: nn.Conv2d) -> bool:
    """timm.layers.Conv2dSame: TF "same" padding computed from the input's size at run time."""
    return type(conv).__name__ == "Conv2dSame"


def conv_geometry(conv: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, object]:
    """The input and padding a conv module would use: timm's ``Conv2dSame`` pads dynamically (TF
    "same"), every other conv pads statically. Returns (possibly padded x, padding for F.conv2d)."""
    if _tf_same(conv):  # pad at run time, then no padding
        from timm.layers import pad_same

        return pad_same(x, conv.weight.shape[-2:], conv.stride, conv.dilation), 0
    if conv.padding_mode != "zeros":
        raise ValueError(f"padding mode {conv.padding_mode!r} is not supported in mixed-domain batches")
    return x, conv.padding


def _pads(conv: nn.Conv2d, size: tuple[int, int]) -> list[tuple[int, int]] | None:
    """(before, after) zero padding of each spatial dimension for inputs of ``size``: timm's TF "same"
    (``Conv2dSame``, one more after than before where the total is odd) or the static padding; None for a
    padding string or another padding mode."""
    if _tf_same(conv):
        from timm.layers.padding import get_same_padding

        totals = [get_same_padding(n, k, s, d) for n, k, s, d in zip(size, conv.kernel_size, conv.stride, conv.dilation)]
        return [(t // 2, t - t // 2) for t in totals]
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    return [(p, p) for p in conv.padding]


def _reach(size: int, k: int, stride: int, pad: int) -> tuple[int, int]:
    """The taps [first, end) of a k-tap window, stride ``stride``, over ``size`` inputs padded by ``pad``
    on both sides, that ever read an input rather than padding (the others multiply zeros only)."""
    out = (size + 2 * pad - k) // stride + 1
    first, last = max(0, pad - (out - 1) * stride), min(k - 1, pad + size - 1)
    if (size + 2 * (pad - first) - (last - first + 1)) // stride + 1 != out:
        return 0, k  # a lopsided cut would change the number of outputs: keep every tap
    return first, last + 1


def unpadded_filters(conv: nn.Conv2d, size: tuple[int, int], weight: torch.Tensor):
    """(weight, padding) with which F.conv2d computes on an input of spatial ``size`` what ``conv`` with
    filters ``weight`` [..., kh, kw] computes, with no padded copy of the input: timm's "same" padding,
    one more after than before, becomes symmetric padding with a zero tap before the filter (exact: that
    tap reads padding alone), and taps that only ever read padding are cut off (a 5x5 filter on a 2x2 map
    reads its centre 3x3 alone). None where this does not apply (dilation, a padding string): use
    :func:`conv_geometry`. On Lite0's folded depthwise convs (up to 11520 channels) the padded copy cost
    2-3x the conv on stride-2 layers, and oneDNN took 0.7-3 ms on 1x1 maps with 5x5 filters (60 us cut)."""
    pads = _pads(conv, size)
    if pads is None or tuple(conv.dilation) != (1, 1) or any(a - b not in (0, 1) for b, a in pads):
        return None
    for dim, (before, after) in zip((-2, -1), pads):
        if after > before:  # the zero tap: window start shifted by one, symmetric padding `after`
            weight = torch.cat([torch.zeros_like(weight.narrow(dim, 0, 1)), weight], dim)
    padding = [a for _, a in pads]
    for i, (dim, n, stride) in enumerate(zip((-2, -1), size, conv.stride)):
        first, end = _reach(n, weight.shape[dim], stride, padding[i])
        weight, padding[i] = weight.narrow(dim, first, end - first), padding[i] - first
    return weight.contiguous(), tuple(padding)


def channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def batch_in_channels(x: torch.Tensor) -> bool:
    """A [B, C, H, W] tensor stored as [H, W, B, C]: the layout in which the batch folds into channels
    as a view ([1, B*C, H, W] channels_last), the per-sample depthwise conv's own input and output. Mixed
    eval batches at a few images per domain keep it from one per-sample conv to the next (the shared 1x1
    convs between them run as matmuls over [H*W*B, C]), so those convs fold and unfold without a copy."""
    if x.dim() != 4 or not all(type(n) is int for n in x.shape) or x.shape[0] < 2:
        return False  # (symbolic sizes: a graph being traced, which never holds this layout)
    b, c, h, w = x.shape
    return x.stride(1) == 1 and x.stride(0) == c and x.stride(3) == b * c and x.stride(2) == w * b * c


def matmul_layout(x: torch.Tensor) -> bool:
    """Whether ``pointwise_linear`` runs on ``x`` without a copy: channels_last, ``batch_in_channels``,
    or 1x1 maps in any layout (MobileNetV3's conv_head after pooling: on the CPU the conv on [10, 960, 1, 1]
    is ~8x slower than the matmul)."""
    return channels_last(x) or batch_in_channels(x) or (x.dim() == 4 and x.shape[-2] * x.shape[-1] == 1)


def fold_batch(x: torch.Tensor) -> torch.Tensor:
    """A ``batch_in_channels`` [B, C, H, W] as the [1, B*C, H, W] channels_last tensor it is (a view)."""
    b, c, h, w = x.shape
    return x.as_strided((1, b * c, h, w), (b * c * h * w, 1, w * b * c, b * c), x.storage_offset())


def unfold_batch(y: torch.Tensor, b: int) -> torch.Tensor:
    """A [1, B*C, H, W] channels_last tensor as the ``batch_in_channels`` [B, C, H, W] it holds (a view)."""
    y = y.contiguous(memory_format=torch.channels_last)  # a no-op for a conv's or pool's channels_last output
    _, bc, h, w = y.shape
    c = bc // b
    return y.as_strided((b, c, h, w), (c, 1, w * b * c, b * c), y.storage_offset())


def cat_batch(ys: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along the batch (one part: itself, no copy). ``torch.cat`` keeps channels_last when
    every part has it, as every slice of a channels_last batch does."""
    return ys[0] if len(ys) == 1 else torch.cat(ys)


def is_plain_pointwise(m: nn.Module) -> bool:
    """A 1x1 conv that is a matmul over channels: stride 1, no padding, one group."""
    return (isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and tuple(m.stride) == (1, 1)
            and m.groups == 1 and m.padding in ((0, 0), 0, "valid") and m.padding_mode == "zeros")


def pointwise_linear(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` (see is_plain_pointwise) as one matmul over channels, no copy in or out: over the
    [N, H, W, C] view of a channels_last batch (on the CPU it beats the conv on the small per-domain
    slices of a mixed batch: one domain's conv_head on Lite0, 0.21 vs 0.56 ms for 10 images, 0.08 vs
    0.085 ms for one), or over the [H, W, B, C] view of a ``batch_in_channels`` one (the result keeps it).
    Other layouts are copied to [N, H, W, C] first."""
    weight = conv.weight.reshape(conv.out_channels, conv.in_channels)
    if batch_in_channels(x):
        return F.linear(x.permute(2, 3, 0, 1), weight, conv.bias).permute(2, 3, 0, 1)
    return F.linear(x.permute(0, 2, 3, 1), weight, conv.bias).permute(0, 3, 1, 2)


def per_sample_depthwise(conv: nn.Conv2d, x: torch.Tensor, weights: torch.Tensor,
                         bias: torch.Tensor | None = None, keep_folded: bool = False) -> torch.Tensor:
    """Stacked depthwise conv (paper eq. 7): ``weights`` [B, Cout, 1, k, k] are each sample's own filters
    (Cout a multiple of Cin); ``conv`` gives stride, padding and dilation.

    The batch is folded into channels, [1, B*C, H, W], and run as ONE grouped conv with groups=B*C.
    ``batch_in_channels`` input folds as a free view (channels_last over [H, W, B*C]), and so does NCHW
    input ([B*C, H, W]); channels_last input is folded with one permute copy (CPU depthwise kernels are
    far faster in channels_last). The result is NCHW for NCHW input, else channels_last (one copy out).
    ``keep_folded`` (for a caller whose next layers read it): any input is folded channels_last (a copy
    unless it is batch_in_channels already) and the result is ``batch_in_channels``, no copy out.
    """
    b, c, h, w = x.shape
    if batch_in_channels(x):
        xf = fold_batch(x)
    elif channels_last(x) or keep_folded:
        xf = x.permute(2, 3, 0, 1).contiguous().view(1, h, w, b * c).permute(0, 3, 1, 2)
    else:
        xf = x.reshape(1, b * c, h, w)
    xf, padding = conv_geometry(conv, xf)  # timm's dynamic "same" padding reads only H and W
    cout = weights.shape[1]
    wf = weights.reshape(b * cout, 1, *weights.shape[-2:])
    bf = bias.reshape(b * cout) if bias is not None else None
    y = F.conv2d(xf, wf, bf, stride=conv.stride, padding=padding, dilation=conv.dilation, groups=b * c)
    ho, wo = y.shape[-2:]
    if xf.is_contiguous():  # NCHW in, NCHW out
        return y.reshape(b, cout, ho, wo)
    folded = unfold_batch(y, b)
    if keep_folded:
        return folded
    return folded.contiguous(memory_format=torch.channels_last)  # [B, C', H', W'] channels_last


def _folded_conv(conv: nn.Conv2d, x: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | None,
                 slices: list[tuple[int, int]]) -> torch.Tensor:
    """The grouped conv of ``folded_depthwise`` -> [n, H', W', D, Cout] (channels innermost)."""
    x, padding = conv_geometry(conv, x)
    nhwc = x.permute(0, 2, 3, 1)  # a view of channels_last memory
    n, d = max(e - s for s, e in slices), len(slices)
    if all(e - s == n for s, e in slices):  # [D, n, H, W, C] -> [n, H, W, D, C]: one copy
        folded = nhwc.reshape(d, n, *nhwc.shape[1:]).permute(1, 2, 3, 0, 4).contiguous()
    else:
        parts = [nhwc[s:e] if e - s == n else F.pad(nhwc[s:e], (0, 0, 0, 0, 0, 0, 0, n - (e - s))) for s, e in slices]
        folded = torch.stack(parts, dim=3)
    _, h, w, _, c = folded.shape
    y = F.conv2d(folded.view(n, h, w, d * c).permute(0, 3, 1, 2), weights, bias, stride=conv.stride,
                 padding=padding, dilation=conv.dilation, groups=d * c)
    return y.permute(0, 2, 3, 1).reshape(n, *y.shape[-2:], d, weights.shape[0] // d)


def folded_depthwise(conv: nn.Conv2d, x: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | None,
                     slices: list[tuple[int, int]], scale: torch.Tensor | None = None,
                     shift: torch.Tensor | None = None) -> torch.Tensor:
    """Depthwise conv of a channels_last batch sorted by domain, ``slices`` [(start, end)] one per domain,
    as ONE grouped conv with the domains' own filters: the batch is folded domain-major, the i-th image
    of every domain side by side in channels ([n, H, W, D*C], n the longest slice, shorter ones
    zero-padded), so ``weights`` [D*Cout, 1, k, k] (the stacked filters, flattened: domain-major) and
    ``bias`` [D*Cout] are used as they are, with no per-sample gather. The result is joined back into
    one channels_last batch, with each sample's affine ``scale``/``shift`` [B, Cout] applied on the way
    when given (a following norm's: fusion.py). Equal slices fold and join with one call each."""
    y = _folded_conv(conv, x, weights, bias, slices)
    n, ho, wo, d, c = y.shape
    if any(e - s != n for s, e in slices):
        parts = [y[:e - s, :, :, i].permute(0, 3, 1, 2) for i, (s, e) in enumerate(slices)]
        if scale is not None:
            return _affine_into(parts, slices, scale, shift)
        return torch.cat([p.permute(0, 2, 3, 1) for p in parts]).permute(0, 3, 1, 2)
    out = torch.empty((d * n, c, ho, wo), dtype=y.dtype, device=y.device, memory_format=torch.channels_last)
    view = out.permute(0, 2, 3, 1).view(d, n, ho, wo, c).permute(1, 2, 3, 0, 4)  # out as [n, H', W', D, C]
    if scale is None:
        view.copy_(y)
    else:
        rows = lambda t: t.view(d, n, c).permute(1, 0, 2)[:, None, None]  # noqa: E731  [B, C] -> [n, 1, 1, D, C]
        torch.addcmul(rows(shift), y, rows(scale), out=view)
    return out


def affine_into(parts: list[torch.Tensor], bounds: list[tuple[int, int]], scale: torch.Tensor,
                shift: torch.Tensor) -> torch.Tensor:
    """One channels_last batch from ``parts`` (each [end - start, C, H, W], any layout) with each sample's
    affine ``scale``/``shift`` [B, C] applied on the way: the join and the affine in one pass."""
    first = parts[0]
    out = torch.empty((bounds[-1][1], *first.shape[1:]), dtype=first.dtype, device=first.device,
                      memory_format=torch.channels_last)
    for part, (s, e) in zip(parts, bounds):
        torch.addcmul(shift[s:e, :, None, None], part, scale[s:e, :, None, None], out=out[s:e])
    return out


_affine_into = affine_into  # folded_depthwise's own join (tests count the wrappers' calls of affine_into)


def mixed_depthwise(conv: nn.Conv2d, x: torch.Tensor, stacked: torch.Tensor, mix: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """Soft-shared depthwise (paper eq. 8): sum_t s_t * DW_t(x).

    ``stacked`` [T, Cout, 1, k, k] the T mixed domains' filters, ``mix`` [B, T] (softmax gate outputs),
    ``bias`` [T, Cout] or None. One grouped conv (groups=Cin, T outputs per filter) computes all T.
    """
    x, padding = conv_geometry(conv, x)
    t, cout = stacked.shape[:2]
    w = stacked.transpose(0, 1).reshape(cout * t, 1, *stacked.shape[-2:])
    b = bias.transpose(0, 1).reshape(cout * t) if bias is not None else None
    y = F.conv2d(x, w, b, stride=conv.stride, padding=padding, dilation=conv.dilation, groups=conv.groups)
    y = y.reshape(y.shape[0], cout, t, y.shape[-2], y.shape[-1])
    return (y * mix[:, None, :, None, None]).sum(2)


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BatchNorm as an affine map y = x * scale + shift (per channel)."""
    weight = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
    bias = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
    scale = weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bias - bn.running_mean * scale


def per_sample_affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    """x with channels at ``channel_dim`` (1 for NCHW, -1 for channels-last tensors); scale/shift [B, C]."""
    shape = [x.shape[0]] + [1] * (x.dim() - 1)
    shape[channel_dim] = x.shape[channel_dim]
    return torch.addcmul(shift.reshape(shape), x, scale.reshape(shape))
