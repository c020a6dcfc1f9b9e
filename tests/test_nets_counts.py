"""Exact parameter counts of the real full-width networks, against two independent sources: the
arithmetic spelled out below, and the test doubles of the papers' reference networks (_reference_nets.py,
written from the reference code; a second task there adds exactly one task's tensors)."""
import pytest
from _reference_nets import GuoResNet26, RebuffiResNet26

from mdl.core import create_network, list_methods, list_trunks

# ---- resnet26_dw (Guo et al.): stem dw3x3 on 3 ch -> pw 3->64 -> BN, stages 128/256/512, 4 blocks x 2
# (dw3x3 -> pw1x1 -> BN), end BN before pooling (models/resnet.py, models/base.py of the reference)
STEM_DW_DW, STEM_DW_PW = 3 * 9, 3 * 64                                 # 27, 192
DEPTHWISE = 9 * ((64 + 7 * 128) + (128 + 7 * 256) + (256 + 7 * 512))    # 60,480 (blocks)
POINTWISE = ((64 * 128 + 7 * 128 * 128) + (128 * 256 + 7 * 256 * 256)
             + (256 * 512 + 7 * 512 * 512))                            # 2,580,480 (blocks)
BN_DW = 2 * (64 + 8 * 128 + 8 * 256 + 8 * 512 + 512)                   # 15,488 (gamma+beta, end BN included)
LAST_PW = 512 * 512                                                    # 262,144
TRUNK_DW = STEM_DW_DW + STEM_DW_PW + DEPTHWISE + POINTWISE + BN_DW     # 2,656,667 (no head)
SOURCE_HEAD = 512 * 1000 + 1000                                        # imagenet12 head, 513,000
DW_DOMAIN = STEM_DW_DW + DEPTHWISE + BN_DW + LAST_PW                    # 338,139 (+ head)

# ---- resnet26 (decathlon): stem 3->32, stages 64/128/256, 4 blocks x 2 (conv3x3 -> BN), end BN (models.py)
STEM_R = 3 * 32 * 9                                                    # 864
BLOCK_CONV_R = 9 * ((32 * 64 + 7 * 64 * 64) + (64 * 128 + 7 * 128 * 128)
                    + (128 * 256 + 7 * 256 * 256))                     # 5,806,080
CONV_R = STEM_R + BLOCK_CONV_R                                          # 5,806,944
BN_R = 2 * (32 + 8 * 64 + 8 * 128 + 8 * 256 + 256)                     # 7,744 (end BN included)
PARALLEL = CONV_R // 9                                                 # 645,216 (1x1 beside every 3x3, stem too)
SERIES = (32 * 32 + 8 * 64 * 64 + 8 * 128 * 128 + 8 * 256 * 256) + 2 * (32 + 8 * (64 + 128 + 256))  # 689,152 + 7,232

# ---- the pre-reference networks (v0, kept for old registries): dense stem 3->64, no end BN
TRUNK_DW_V0 = 3 * 64 * 9 + DEPTHWISE + POINTWISE + 2 * (64 + 8 * 128 + 8 * 256 + 8 * 512)  # 2,657,152
DW_DOMAIN_V0 = DEPTHWISE + 2 * (64 + 8 * 128 + 8 * 256 + 8 * 512) + LAST_PW                # 337,088


def head(c, k):
    return c * k + k


def learnable(module) -> int:
    return sum(p.numel() for p in module.parameters())


def reference_split(make, c: int) -> tuple[int, int]:
    """(shared, one task's part without its head) of a reference double, measured: the part is what a
    second task adds, the rest of a one-task network minus its head is shared."""
    one, two = learnable(make([10])), learnable(make([10, 47]))
    per_task = two - one - head(c, 47)
    return one - per_task - head(c, 10), per_task


# Guo's code shares the last pointwise conv as a module but trains it per dataset; mdl's dw keeps it per domain
GUO_LAST_PW = GuoResNet26([10]).blocks[2][3].SeparableConv2d2.pointwise.weight.numel()


@pytest.mark.parametrize("arch,method,make,moved,shared,per_domain", [
    ("resnet26_dw", "dw", GuoResNet26, GUO_LAST_PW, STEM_DW_PW + POINTWISE - LAST_PW, DW_DOMAIN),
    ("resnet26", "bn", lambda k: RebuffiResNet26(k, mode="bn"), 0, CONV_R, BN_R),
    ("resnet26", "parallel-adapter", lambda k: RebuffiResNet26(k, mode="parallel"), 0, CONV_R, BN_R + PARALLEL),
    ("resnet26", "series-adapter", lambda k: RebuffiResNet26(k, mode="series"), 0, CONV_R, BN_R + SERIES),
], ids=["guo-dw", "rebuffi-bn", "rebuffi-parallel", "rebuffi-series"])
def test_counts_equal_the_reference_networks(arch, method, make, moved, shared, per_domain):
    c = 512 if arch == "resnet26_dw" else 256
    ref_shared, ref_task = reference_split(make, c)
    # the arithmetic and the reference agree, so a mismatch below is the network's
    assert (ref_shared - moved, ref_task + moved) == (shared, per_domain)
    counts = create_network(arch, method=method, domains={"svhn": 10, "dtd": 47}).parameter_counts()
    assert counts["shared"] == ref_shared - moved
    assert counts["domains"] == {"svhn": ref_task + moved + head(c, 10), "dtd": ref_task + moved + head(c, 47)}


def test_registries():
    assert list_trunks() == ["resnet26", "resnet26_dw", "resnet26_dw_in", "resnet26_dw_v0", "resnet26_in", "resnet26_v0"]
    assert set(list_methods()) == {"dw", "dw-sharing", "classifier-only", "finetune", "bn",
                                   "parallel-adapter", "parallel-adapter-svd", "series-adapter"}


@pytest.mark.parametrize("arch,method,shared,per_domain", [
    ("resnet26_dw", "dw", STEM_DW_PW + POINTWISE - LAST_PW, DW_DOMAIN),
    # every pointwise conv is per-domain under dw-sharing, the stem's included
    ("resnet26_dw", "dw-sharing", STEM_DW_DW + DEPTHWISE, STEM_DW_PW + POINTWISE + BN_DW),
    ("resnet26_dw", "classifier-only", TRUNK_DW, 0),
    ("resnet26_dw", "finetune", 0, TRUNK_DW),
    ("resnet26", "classifier-only", CONV_R + BN_R, 0),
    ("resnet26", "finetune", 0, CONV_R + BN_R),
    ("resnet26", "bn", CONV_R, BN_R),
    ("resnet26", "parallel-adapter", CONV_R, BN_R + PARALLEL),
    ("resnet26", "series-adapter", CONV_R, BN_R + SERIES),
    ("resnet26_dw_v0", "dw", TRUNK_DW_V0 - DW_DOMAIN_V0, DW_DOMAIN_V0),
])
def test_full_width_counts(arch, method, shared, per_domain):
    net = create_network(arch, method=method, domains={"svhn": 10, "dtd": 47})
    c = 512 if arch.startswith("resnet26_dw") else 256
    counts = net.parameter_counts()
    assert counts["shared"] == shared
    assert counts["domains"] == {"svhn": per_domain + head(c, 10), "dtd": per_domain + head(c, 47)}
    # the whole trunk is shared + one domain's trunk part, whatever the method
    trunk = sum(v.numel() for k, v in net.trunk_state_dict("svhn").items()
                if not k.endswith(("running_mean", "running_var")))
    assert trunk == {"resnet26_dw": TRUNK_DW, "resnet26": CONV_R + BN_R, "resnet26_dw_v0": TRUNK_DW_V0}[arch]


def test_dw_per_domain_fraction():
    """Paper: ~0.3M per domain + head, ~10% of the ~3.0M network. The 3.0M counts the full pretrained
    network INCLUDING its 1000-class source head (2,656,667 + 513,000 = 3,169,667); against that,
    338,139 is 10.7%. Against the headless trunk (2,656,667) it would be 12.7%, so the ratio is defined
    against the full pretrained network. Measured on the real network."""
    counts = create_network("resnet26_dw", method="dw", domains={"imagenet12": 1000}).parameter_counts()
    total = counts["shared"] + counts["domains"]["imagenet12"]
    own = counts["domains"]["imagenet12"] - SOURCE_HEAD
    assert total == TRUNK_DW + SOURCE_HEAD == learnable(GuoResNet26([1000]))  # the reference's ImageNet network
    assert own == DW_DOMAIN
    assert 0.25e6 < own < 0.35e6 and 2.9e6 < total < 3.3e6  # the paper's ~0.3M and ~3.0M
    assert 0.09 < own / total <= 0.12  # ~10%, not the 12.7% of a headless denominator


def test_width_multiplier_shrinks():
    net = create_network("resnet26_dw", method="dw", domains={"a": 3}, width=0.25)
    st = net.trunk_state_dict("a")
    assert st["stem.dw.weight"].shape == (3, 1, 3, 3) and st["stem.pw.weight"].shape == (16, 3, 1, 1)
    assert st["end_bn.weight"].shape == (128,)
    assert st["s3.b3.pw2.weight"].shape == (128, 128, 1, 1)
