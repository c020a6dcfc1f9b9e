"""Training recipes: the paper's SGD schedule scaled to a number of epochs, per-domain weight decay."""
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

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}")
        if not math.isfinite(self.lr) or not math.isfinite(self.weight_decay):
            raise ValueError(f"--lr and --wd must be finite numbers, got lr {self.lr} and wd {self.weight_decay}")
        if self.lr <= 0 or self.batch_size < 1 or self.weight_decay < 0:
            raise ValueError("--lr and --batch-size must be positive and --wd non-negative")

    def milestones(self) -> list[int]:
        """Epochs after which the lr decays; fractions that round to the first or past the last epoch drop out."""
        return sorted({round(f * self.epochs) for f in self.decay_at if 0 < round(f * self.epochs) < self.epochs})

    def lr_at(self, epoch: int) -> float:
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones())

    def to_dict(self) -> dict:
        return asdict(self)
