"""The named choices of mdl.core that a caller picks from, in one torch-free module: the modules that
use them check against these tables, and the command line builds its options from them (so `mdl --help`
imports no torch and never holds a hand copy). The recipes' own tables are in recipes.py (torch-free too)."""
from __future__ import annotations

# A fresh registry's trunk: ImageNet EfficientNet-Lite0, whose weights install as a package (mdl.core.pretrained)
DEFAULT_TRUNK = "timm/tf_efficientnet_lite0"
DEVICES = ("auto", "cpu", "cuda")                  # training.DeviceSetup.resolve: auto = CUDA when present
ON_BAD_IMAGE = ("skip", "fail")                    # data readers: an undecodable image is skipped (counted) or fatal
PLACEMENTS = ("early", "middle", "late", "all")    # nets.gate: which depthwise layers a gate mixes
# What trains with a gate. ``gate``: the gate MLPs only, every norm frozen at its running statistics (the
# paper's text). ``gate+domain``: also the target's own parameters except its depthwise filters -- norms
# (batch statistics), the last pointwise conv, the end BN, the classifier -- as the released
# ``main_sharing.py`` does (it freezes every 3x3 kernel and every 1x1 but the 25th).
GATE_SCOPES = ("gate", "gate+domain")
EXPORT_FORMATS = ("onnx", "pt2", "torchscript")    # export.export_network
DEPRECATED_FORMATS = {"torchscript": "TorchScript (torch.jit) is deprecated since torch 2.14 and warns on every "
                                     "load; use --format pt2 (torch.export) for PyTorch"}
SCORE_SPLITS = ("val", "test")                     # the held-out splits a score is computed on
# Joint training (Bilen & Vedaldi 2017): variant -> the method its domains are registered with.
JOINT_VARIANTS = {"bn": "bn", "instance-norm": "classifier-only"}
# A batch norm's buffers, not parameters: left out of parameter counts and of instance-norm state dicts.
BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
