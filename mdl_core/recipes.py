"""Training recipes: the paper's SGD schedule scaled to a number of epochs, per-domain weight decay,
and the papers' published recipes (preprocessing, dropout, weight-decay groups) selectable by name."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

# Guo et al. (AAAI 2019) per-dataset weight decay; small datasets need more regularisation.
PAPER_WEIGHT_DECAY = {
    "dtd": 2e-3,
    "aircraft": 5e-4, "cifar100": 5e-4, "daimlerpedcls": 5e-4, "omniglot": 5e-4, "ucf101": 5e-4,
    "gtsrb": 3e-4, "svhn": 3e-4, "vgg-flowers": 3e-4,
}
DEFAULT_WEIGHT_DECAY = 1e-4
SMALL_DATASET = 10_000  # custom domains with fewer training images get the small-dataset decay
SMALL_DATASET_WEIGHT_DECAY = 5e-4


def default_weight_decay(name: str, num_train: int) -> float:
    """The paper's value for a decathlon domain; otherwise 5e-4 below 10k training images, else 1e-4."""
    if name in PAPER_WEIGHT_DECAY:
        return PAPER_WEIGHT_DECAY[name]
    return SMALL_DATASET_WEIGHT_DECAY if num_train < SMALL_DATASET else DEFAULT_WEIGHT_DECAY


# --- the papers' recipes, as their released code runs them -------------------------------------------


@dataclass(frozen=True)
class PublishedRecipe:
    """What a paper's training script fixes besides the schedule.

    ``preprocessing``: ``uniform`` (mdl: every domain cropped to 64/72 of the image size, so any domains
    share one stacked batch) or ``reference`` (both references' ``imdbfolder_coco.py``: the no-flip
    domains (gtsrb, omniglot, svhn; any domain whose data says no flip) resized to 72 and fed whole, no
    crop, no flip, train and test; the others random 64 crop + flip for training, centre 64 at test).
    ``dropout``: domain -> rate of the dropout before the classifier (Guo et al. ``main.py``'s
    ``dropout_list``; their ``FlatResNet.forward`` applies ``F.dropout(p=0.5)`` before ``fcs``).
    ``wd_groups``: the default weight-decay grouping (see :func:`weight_decay_groups`).
    """

    name: str
    preprocessing: str
    dropout: dict = field(default_factory=dict)
    wd_groups: str = "guo"
    read_from: str = ""
    weight_decay: dict = field(default_factory=dict)  # per-domain decay where it differs from PAPER_WEIGHT_DECAY


PUBLISHED_RECIPES = {
    "mdl": PublishedRecipe("mdl", "uniform", {}, "guo", "mdl's default: one input size for every domain"),
    "guo2019": PublishedRecipe(
        "guo2019", "reference", {"gtsrb": 0.5, "ucf101": 0.5, "daimlerpedcls": 0.5}, "guo",
        "yunhuiguo/Depthwise_Convolution_for_Multiple_Domain_Learning main.py (dropout_list, weight_decays), "
        "models/resnet.py (dropout before fcs), srebuffi/residual_adapters imdbfolder_coco.py (transforms)",
        # main.py's weight_decays differ from the paper's text for two domains: the code's values ran
        {"svhn": 2e-4, "vgg-flowers": 1e-4}),
    "rebuffi2018": PublishedRecipe(
        "rebuffi2018", "reference", {}, "rebuffi",
        "srebuffi/residual_adapters imdbfolder_coco.py (transforms), sgd.py and train_new_task_adapters.py "
        "(--wd, --wd1x1, --wd3x3 in units of 1e-4), README.md (--wd1x1 1. --wd 5.)"),
}
WD_GROUPS = ("guo", "rebuffi")
TRAIN_ON = ("train", "train+val")
# Rebuffi et al.'s grouping (their sgd.py picks the decay by kernel shape): 3x3 and 1x1 kernels get
# decay3x3 / decay1x1, every other parameter (BN, classifier) --wd; the README's example: 1e-4 / 1e-4 / 5e-4.
REBUFFI_DECAY_3X3, REBUFFI_DECAY_1X1, REBUFFI_DECAY_OTHER = 1e-4, 1e-4, 5e-4


def published_recipe(name: str) -> PublishedRecipe:
    if name not in PUBLISHED_RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid: {', '.join(PUBLISHED_RECIPES)}")
    return PUBLISHED_RECIPES[name]


def weight_decay_groups(params, scheme: str, weight_decay: float) -> list[dict]:
    """Optimizer parameter groups.

    ``guo`` (the depthwise paper; ``main.py``): one decay, the domain's, for every trained parameter.
    ``rebuffi`` (``sgd.py``): by kernel shape -- kxk (k>1) conv kernels REBUFFI_DECAY_3X3, 1x1 kernels
    (adapters, pointwise convs) REBUFFI_DECAY_1X1, everything else ``weight_decay`` (their ``--wd``, the
    classifier's and the norms'; pass REBUFFI_DECAY_OTHER for their example).
    """
    params = list(params)
    if scheme == "guo":
        return [{"params": params, "weight_decay": weight_decay}]
    if scheme != "rebuffi":
        raise ValueError(f"unknown weight-decay grouping {scheme!r}; valid: {', '.join(WD_GROUPS)}")
    spatial = [p for p in params if p.dim() == 4 and max(p.shape[-2:]) > 1]
    one = [p for p in params if p.dim() == 4 and max(p.shape[-2:]) == 1]
    kernel_ids = {id(p) for p in spatial + one}
    other = [p for p in params if id(p) not in kernel_ids]
    groups = [{"params": spatial, "weight_decay": REBUFFI_DECAY_3X3}, {"params": one, "weight_decay": REBUFFI_DECAY_1X1},
              {"params": other, "weight_decay": weight_decay}]
    return [g for g in groups if g["params"]]


@dataclass
class Recipe:
    """SGD with momentum and step decays (x`gamma` at the given fractions of training)."""

    epochs: int
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    batch_size: int = 64
    decay_at: tuple[float, ...] = field(default=(0.5, 0.75))
    gamma: float = 0.1
    seed: int = 0
    warmup: bool = True  # ramp the lr up linearly through the first epoch: lr 0.1 from random init diverges otherwise
    name: str = "mdl"        # the published recipe (PUBLISHED_RECIPES) this run follows
    wd_groups: str = "guo"   # weight_decay_groups scheme
    dropout: float = 0.0     # before the classifier, training only
    train_on: str = "train"  # "train+val": fixed epochs, no validation, the last epoch is kept

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}")
        if not math.isfinite(self.lr) or not math.isfinite(self.weight_decay):
            raise ValueError(f"--lr and --wd must be finite numbers, got lr {self.lr} and wd {self.weight_decay}")
        if self.lr <= 0 or self.batch_size < 1 or self.weight_decay < 0:
            raise ValueError("--lr and --batch-size must be positive and --wd non-negative")
        if self.wd_groups not in WD_GROUPS:
            raise ValueError(f"unknown --wd-groups {self.wd_groups!r}; valid: {', '.join(WD_GROUPS)}")
        if self.train_on not in TRAIN_ON:
            raise ValueError(f"unknown --train-on {self.train_on!r}; valid: {', '.join(TRAIN_ON)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def milestones(self) -> list[int]:
        """Epochs after which the lr decays; fractions that round to the first or past the last epoch drop out."""
        return sorted({round(f * self.epochs) for f in self.decay_at if 0 < round(f * self.epochs) < self.epochs})

    def lr_at(self, epoch: int) -> float:
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones())

    def to_dict(self) -> dict:
        return asdict(self)
