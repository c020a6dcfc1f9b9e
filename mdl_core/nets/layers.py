"""Functional building blocks shared by the single-domain, stacked (mixed-batch) and gated paths."""
from __future__ import annotations

import torch
import torch.nn.functional as F

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def shortcut(x: torch.Tensor, cout: int, downsample: bool) -> torch.Tensor:
    """Parameter-free shortcut: 2x2 average pool (stride 2) + zero-padded channels."""
    if downsample:
        x = F.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False)
    if x.shape[1] < cout:
        x = F.pad(x, (0, 0, 0, 0, 0, cout - x.shape[1]))
    return x


def batch_norm(x, t: dict, training: bool) -> torch.Tensor:
    """t: {"weight","bias","running_mean","running_var"}; updates running stats in place when training."""
    return F.batch_norm(x, t["running_mean"], t["running_var"], t["weight"], t["bias"],
                        training, BN_MOMENTUM, BN_EPS)


def bn_scale_shift(t: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as an affine map: y = x * scale + shift."""
    scale = t["weight"] * torch.rsqrt(t["running_var"] + BN_EPS)
    return scale, t["bias"] - t["running_mean"] * scale


def per_sample_affine(x, scale, shift) -> torch.Tensor:
    """x [B,C,H,W]; scale/shift [B,C] (gathered per sample from a stacked [D,C])."""
    return torch.addcmul(shift[:, :, None, None], x, scale[:, :, None, None])


def per_sample_depthwise(x, weights, stride: int) -> torch.Tensor:
    """Stacked depthwise conv (paper eq. 7): x [B,C,H,W], weights [B,C,1,k,k] (each sample's own filters).

    The batch is folded into channels, [1, B*C, H, W], and run as ONE grouped convolution with
    groups=B*C. NCHW input folds as a free view; channels_last input is folded with one permute copy
    (layout [H, W, B*C]) because CPU depthwise kernels are far faster in channels_last, and the result
    is handed back in channels_last.
    """
    b, c, h, w = x.shape
    k = weights.shape[-1]
    wf = weights.reshape(b * c, 1, k, k)
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        xf = x.permute(2, 3, 0, 1).contiguous().view(1, h, w, b * c).permute(0, 3, 1, 2)
        y = F.conv2d(xf, wf, stride=stride, padding=k // 2, groups=b * c)
        ho, wo = y.shape[-2:]
        y = y.permute(0, 2, 3, 1).reshape(ho, wo, b, c)       # [H', W', B, C]
        return y.permute(2, 0, 1, 3).contiguous().permute(0, 3, 1, 2)  # [B, C, H', W'] channels_last
    y = F.conv2d(x.reshape(1, b * c, h, w), wf, stride=stride, padding=k // 2, groups=b * c)
    return y.reshape(b, c, y.shape[-2], y.shape[-1])


def mixed_depthwise(x, stacked, weights_s, stride: int) -> torch.Tensor:
    """Soft-shared depthwise (paper eq. 8): sum_t s_t * DW_t(x).

    stacked [T,C,1,k,k] (the T mixed domains' filters), weights_s [B,T] (softmax gate outputs).
    One grouped conv (groups=C, T outputs per group) computes all T domains' outputs.
    """
    t, c = stacked.shape[:2]
    k = stacked.shape[-1]
    w = stacked.transpose(0, 1).reshape(c * t, 1, k, k)
    y = F.conv2d(x, w, stride=stride, padding=k // 2, groups=c)
    y = y.reshape(y.shape[0], c, t, y.shape[-2], y.shape[-1])
    return (y * weights_s[:, None, :, None, None]).sum(2)
