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
    # the training defaults a run takes unless an option overrides them (see Recipe)
    lr: float = 0.1
    head_lr_scale: float = 1.0      # the new tensors' lr = lr x this (unless --head-lr is given)
    optimizer: str = "sgd"
    schedule: str = "step"
    bn_stats: str = "batch"
    probe_epochs: int = 0
    fixed_weight_decay: float | None = None  # one decay for every domain; None: the papers' per-dataset rule

    def domain_weight_decay(self, name: str, num_train: int) -> float:
        if self.fixed_weight_decay is not None:
            return self.fixed_weight_decay
        return self.weight_decay.get(name) or default_weight_decay(name, num_train)


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
# The default on a trunk pretrained elsewhere (ImageNet Lite0, timm weights): chosen by the study in
# bench/transfer.py on real photos (Fashion-MNIST) and the bundled domains, by validation accuracy; see
# bench/RESULTS.md. Nothing in it depends on a dataset's name.
PUBLISHED_RECIPES["transfer"] = PublishedRecipe(
    "transfer", "uniform", {}, "guo", "bench/transfer.py (mdl's study on real photos)",
    lr=0.003, head_lr_scale=1.0, optimizer="sgd", schedule="cosine", bn_stats="keep", fixed_weight_decay=1e-4)
AUTO = "auto"  # --recipe auto: chosen by the trunk's kind (recipe_for_trunk)
WD_GROUPS = ("guo", "rebuffi")
TRAIN_ON = ("train", "train+val")
# Rebuffi et al.'s grouping (their sgd.py picks the decay by kernel shape): 3x3 and 1x1 kernels get
# decay3x3 / decay1x1, every other parameter (BN, classifier) --wd; the README's example: 1e-4 / 1e-4 / 5e-4.
REBUFFI_DECAY_3X3, REBUFFI_DECAY_1X1, REBUFFI_DECAY_OTHER = 1e-4, 1e-4, 5e-4


def recipe_for_trunk(trunk_config: dict) -> tuple[str, str]:
    """(recipe name, why) for a trunk: weights pretrained elsewhere (a recorded pretrained preprocessing
    config: ImageNet Lite0, timm weights, a trunk jointly trained from them) take the transfer recipe; a
    trunk pretrained here or imported from the papers' reference code, the papers' recipe."""
    if trunk_config.get("pretrained_cfg"):
        return "transfer", "the trunk's weights were pretrained elsewhere (ImageNet): transfer recipe"
    return "mdl", "the trunk was trained the papers' way (pretrained here or by the reference code): the paper's recipe"


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


OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine")
# What happens to the domain's own batch-norm running statistics (see mdl.core.bn_policy):
#   batch        train on the domain's batch statistics and update the running ones (the papers')
#   keep         the statistics copied from the trunk stay, bit for bit; only the affines train
#   adabn        re-estimated on the domain in one pass before training (AdaBN), then kept
#   adabn+batch  re-estimated, then trained on batch statistics
BN_POLICIES = ("batch", "keep", "adabn", "adabn+batch")


def lr_groups(groups: list[dict], new_params, recipe: "Recipe") -> list[dict]:
    """Each optimizer group split in two: the tensors copied from the trunk (``copied``, at ``lr``) and
    the new ones (head, adapters: ``lr_scale`` = head_lr / lr). training.set_lr reads both keys."""
    new = {id(p) for p in new_params}
    scale = (recipe.head_lr or recipe.lr) / recipe.lr
    out = []
    for g in groups:
        for is_new in (False, True):
            ps = [p for p in g["params"] if (id(p) in new) == is_new]
            if ps:
                out.append({**g, "params": ps, "lr_scale": scale if is_new else 1.0, "copied": not is_new})
    return out


@dataclass
class Recipe:
    """An optimiser (SGD with momentum, or AdamW), a schedule (step decays x`gamma` at the given
    fractions of training, or cosine to zero), a linear warm-up through the first epoch, and the
    transfer levers: ``head_lr`` for the tensors that start new (head, adapters; None: ``lr``) against
    ``lr`` for those copied from the trunk, the BN statistics policy, and ``probe_epochs`` of
    head-only training first (LP-FT: the copied tensors wait at lr 0)."""

    epochs: int
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    batch_size: int = 64
    decay_at: tuple[float, ...] = field(default=(0.5, 0.75))
    gamma: float = 0.1
    seed: int = 0
    warmup: bool = True  # ramp the lr up linearly through the first epoch: lr 0.1 from random init diverges otherwise
    name: str = "mdl"        # the recipe (RECIPES) this run follows
    wd_groups: str = "guo"   # weight_decay_groups scheme
    dropout: float = 0.0     # before the classifier, training only
    train_on: str = "train"  # "train+val": fixed epochs, no validation, the last epoch is kept
    optimizer: str = "sgd"
    schedule: str = "step"
    head_lr: float | None = None
    bn_stats: str = "batch"
    probe_epochs: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}")
        lrs = (self.lr, self.weight_decay) + (() if self.head_lr is None else (self.head_lr,))
        if not all(math.isfinite(v) for v in lrs):
            raise ValueError(f"--lr, --head-lr and --wd must be finite numbers, got lr {self.lr}, head lr "
                             f"{self.head_lr} and wd {self.weight_decay}")
        if self.lr <= 0 or (self.head_lr is not None and self.head_lr <= 0) or self.batch_size < 1 or self.weight_decay < 0:
            raise ValueError("--lr, --head-lr and --batch-size must be positive and --wd non-negative")
        for what, value, valid in (("--wd-groups", self.wd_groups, WD_GROUPS), ("--train-on", self.train_on, TRAIN_ON),
                                   ("--optimizer", self.optimizer, OPTIMIZERS), ("--schedule", self.schedule, SCHEDULES),
                                   ("--bn-stats", self.bn_stats, BN_POLICIES)):
            if value not in valid:
                raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.probe_epochs < self.epochs:
            raise ValueError(f"--probe-epochs must be at least 0 and below --epochs ({self.epochs}), got {self.probe_epochs}")

    def milestones(self) -> list[int]:
        """Epochs after which the lr decays; fractions that round to the first or past the last epoch drop out."""
        return sorted({round(f * self.epochs) for f in self.decay_at if 0 < round(f * self.epochs) < self.epochs})

    def schedule_factor(self, epoch: int, step: int = 0, steps: int = 1) -> float:
        """The schedule's lr multiplier at ``step`` of ``steps`` in ``epoch`` (no warm-up)."""
        if self.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * (epoch * steps + step) / (self.epochs * max(steps, 1))))
        return self.gamma ** sum(epoch >= m for m in self.milestones())

    def factor(self, epoch: int, step: int = 0, steps: int = 1) -> float:
        """The lr multiplier a training step uses: the schedule times the warm-up ramp, linear over the
        first epoch (Goyal et al. 2017)."""
        ramp = (step + 1) / max(steps, 1) if self.warmup and epoch == 0 else 1.0
        return self.schedule_factor(epoch, step, steps) * ramp

    def lr_at(self, epoch: int) -> float:
        """The copied tensors' lr as ``epoch`` starts, before warm-up (what the history records)."""
        return self.lr * self.schedule_factor(epoch)

    def to_dict(self) -> dict:
        return asdict(self)
