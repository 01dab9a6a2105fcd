"""The training recipes of `python -m search.train` and what they are built from: `TrainRecipe` and the named
`RECIPES` (the papers' and small CPU ones), cutout, timm's ImageNet transforms, the loss or distillation task, the
teacher, and `training_parts` (network, optimiser, schedule, task, Mixup, EMA, GradScaler for `engine.train_epochs`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fpnas_zoo import resolve_spec
from fpnas_zoo.spec import SpecError

from .engine import Recipe, make_optimizer, make_scheduler, prepare_model, unwrap
from .seeding import derive_seed


@dataclass(frozen=True)
class TrainRecipe:
    """A named recipe: the optimisation (`recipe`: a timm optimiser, lr at `batch_size`, weight decay, timm's
    schedule with its warm-up, label smoothing, epochs) and what `search.train` adds to it, all built from timm's
    parts: an EMA of the weights (`ModelEmaV3`), Mixup/CutMix, and for ImageFolder data timm's transforms
    (RandAugment, random erasing, the crop scale and the test crop)."""

    recipe: Recipe
    batch_size: int  # the global batch `recipe.lr` is given for
    cutout: bool = False
    scale_lr: bool = False  # another --batch-size scales the lr linearly (lr x batch / batch_size)
    ema_decay: float | None = None  # EMA of the weights; exported (and loaded by pretrained=True) when present
    mixup: float = 0.0
    cutmix: float = 0.0
    auto_augment: str | None = None  # timm's policy string, e.g. "rand-m9-mstd0.5"
    reprob: float = 0.0  # random erasing (per pixel, timm's "pixel" mode)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    interpolation: str = "bilinear"
    crop_pct: float = 0.875  # test: resize to size / crop_pct, centre crop `size` (256 -> 224)
    drop_rate: float | None = None  # dropout before the classifier; None: the spec's
    drop_path_rate: float = 0.0
    image_size: int | None = None  # None: the model's own resolution (ImageNet recipes), else the dataset's
    imagenet: bool = False  # trains on an ImageFolder (ImageNet's train/ and val/) only

    @property
    def mixing(self) -> bool:
        """Mixup or CutMix pairs the images of each batch (soft targets)."""
        return self.mixup > 0 or self.cutmix > 0


_SALT_CUTOUT = 0xC07  # keeps the cutout stream apart from the data's own (seed, epoch) streams

RECIPES = {
    # FPNAS final CIFAR-10 training: SGD 0.9, lr 0.02, wd 5e-4, cosine warm restarts T0 = 10, Tmult = 2 down to
    # 1e-4, batch 192. The paper gives no epoch count: 310 ends the fifth restart cycle (10+20+40+80+160).
    "fpnas-cifar": TrainRecipe(Recipe(lr=0.02, momentum=0.9, weight_decay=5e-4, schedule="cosine_restarts", t0=10,
                                      t_mult=2, eta_min=1e-4, epochs=310), batch_size=192),
    # FPNAS ImageNet training (paper, section 4.2): SGD momentum 0.9, lr 0.45 at batch 1024 scaled linearly, cosine
    # warm restarts T0 = 10, Tmult = 2 down to 1e-5, RandomResizedCrop with "slightly less aggressive scale
    # augmentation" for a small model, horizontal flip, mean/std; test resize 256, centre crop 224. What the paper
    # leaves open, chosen here: 150 epochs (the end of the fourth cycle, 10+20+40+80), weight decay 4e-5 (the
    # MobileNetV2 paper's), crop scale (0.25, 1) instead of Inception's (0.08, 1), no label smoothing, no EMA.
    "fpnas-imagenet": TrainRecipe(Recipe(lr=0.45, momentum=0.9, weight_decay=4e-5, schedule="cosine_restarts",
                                         t0=10, t_mult=2, eta_min=1e-5, epochs=150, channels_last=True),
                                  batch_size=1024, scale_lr=True, crop_scale=(0.25, 1.0), imagenet=True),
    # FP-NAS publishes no training recipe (FBNetV2's is unpublished too). A standard mobile ImageNet recipe: timm's
    # documented EfficientNet-B0 command (hfdocs training_script.mdx, 77.7% top-1): RMSProp TF-style, eps 1e-3,
    # lr 0.048 at batch 384 scaled linearly, 450 epochs, step decay 0.97 every 2.4 epochs after a warm-up from
    # 1e-6 (5 epochs, train.py's default), weight decay 1e-5, dropout 0.2, drop path 0.2, EMA 0.9999,
    # RandAugment rand-m9-mstd0.5, random erasing 0.2 per pixel, label smoothing 0.1 (train.py's default), bicubic.
    "fp-nas-imagenet": TrainRecipe(Recipe(lr=0.048, momentum=0.9, weight_decay=1e-5, schedule="step", epochs=450,
                                          warmup_epochs=5, warmup_lr=1e-6, decay_epochs=2.4, decay_rate=0.97,
                                          label_smoothing=0.1, opt="rmsproptf", opt_eps=1e-3, channels_last=True),
                                   batch_size=384, scale_lr=True, ema_decay=0.9999, auto_augment="rand-m9-mstd0.5",
                                   reprob=0.2, interpolation="bicubic", drop_rate=0.2, drop_path_rate=0.2,
                                   imagenet=True),
    # cluttered-digits (bench/search_efficacy.py's ground truth): small networks, a few CPU seconds to minutes each.
    "cluttered-digits": TrainRecipe(Recipe(lr=0.05, weight_decay=5e-4, schedule="cosine", epochs=3, eta_min=1e-4,
                                           channels_last=True), batch_size=64),
    # A few CPU minutes on the embedded digits: checks the whole path, not the paper.
    "demo": TrainRecipe(Recipe(lr=0.05, weight_decay=5e-4, schedule="cosine", epochs=3, eta_min=1e-4), batch_size=64),
}


class Cutout:
    """Batches with one `size` x `size` square (clipped at borders) zeroed per image, drawn from (seed, epoch).

    As DeVries & Taylor's cutout: the square spans rows [cy - size/2, cy + size/2) around a uniform centre.
    """

    def __init__(self, batches, size: int = 16, seed: int = 0):
        self.batches, self.size, self.seed, self.epoch = batches, size, seed, 0
        self.num_samples = batches.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        gen = torch.Generator().manual_seed(derive_seed(self.seed, _SALT_CUTOUT, self.epoch))
        for x, y in self.batches:
            n, _, h, w = x.shape
            cy = torch.randint(h, (n, 1, 1), generator=gen).to(x.device)
            cx = torch.randint(w, (n, 1, 1), generator=gen).to(x.device)
            rows = torch.arange(h, device=x.device).view(1, h, 1)
            cols = torch.arange(w, device=x.device).view(1, 1, w)
            half = self.size // 2
            hole = ((rows - cy >= -half) & (rows - cy < self.size - half)
                    & (cols - cx >= -half) & (cols - cx < self.size - half))
            yield x.masked_fill(hole[:, None], 0.0), y


def imagenet_transforms(plan: TrainRecipe, image_size: int) -> tuple:
    """timm's ImageNet transforms for a recipe: (train, eval). Training: RandomResizedCrop at the recipe's scale, flip,
    its RandAugment and random erasing, no colour jitter unless the recipe names it; eval: resize to
    size / crop_pct and a centre crop."""
    from timm.data import create_transform

    from .data import IMAGENET_MEAN, IMAGENET_STD

    train_tf = create_transform(image_size, is_training=True, scale=plan.crop_scale, hflip=0.5, color_jitter=None,
                                auto_augment=plan.auto_augment, interpolation=plan.interpolation, re_prob=plan.reprob,
                                re_mode="pixel", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    eval_tf = create_transform(image_size, is_training=False, interpolation=plan.interpolation, crop_pct=plan.crop_pct,
                               mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return train_tf, eval_tf


def load_teacher(ref: str, checkpoint: str | None, num_classes: int, device: torch.device) -> torch.nn.Module:
    """A frozen teacher (`--teacher`): a zoo model or spec file with its `search.train` checkpoint (its data's mean
    and std come from the checkpoint), or any timm model with its pretrained weights (or `checkpoint`'s)."""
    import timm

    from hub.exporting import load_model, trained_on

    from .data import dataset_mean_std

    try:
        spec = resolve_spec(ref) if checkpoint is not None else None
    except (SpecError, OSError):
        spec = None
    try:
        if spec is not None:
            net, _ = load_model(ref, checkpoint, num_classes)
            dataset = trained_on(checkpoint)
            if dataset is not None:
                mean, std = dataset_mean_std(dataset)
                net.pretrained_cfg = dict(net.pretrained_cfg or {}, mean=mean, std=std)
        else:
            overlay = None if checkpoint is None else dict(file=str(checkpoint))
            net = timm.create_model(ref, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay=overlay)
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        raise ValueError(f"--teacher {ref}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if getattr(net, "num_classes", num_classes) != num_classes:
        raise ValueError(f"--teacher {ref}: has {net.num_classes} classes, the data {num_classes}")
    net = net.to(device).eval()
    for param in net.parameters():
        param.requires_grad_(False)
    return net


def make_task(net: torch.nn.Module, plan: TrainRecipe, data_spec, device: torch.device, mixup: bool,
              teacher: torch.nn.Module | None = None, temperature: float = 4.0, distill_weight: float | None = None,
              task_weight: float | None = None) -> torch.nn.Module:
    """timm's training task: the recipe's loss (soft-target cross-entropy under Mixup, label smoothing, else plain),
    and with a teacher `LogitDistillationTask`: KL(teacher || student) at `temperature` (x T^2) added to the task
    loss, the student's inputs renormalised from the data's mean/std to the teacher's."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.task import ClassificationTask, DistillationTeacher, LogitDistillationTask

    smoothing = plan.recipe.label_smoothing
    if mixup:
        criterion = SoftTargetCrossEntropy()  # Mixup makes the soft targets, smoothing included
    elif smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(smoothing)
    else:
        criterion = torch.nn.CrossEntropyLoss()
    if teacher is None:
        return ClassificationTask(net, criterion=criterion, device=device, verbose=False)
    student = unwrap(net)  # the task reads the data's normalisation from the student's cfg
    student.pretrained_cfg = dict(student.pretrained_cfg or {}, mean=tuple(data_spec.mean), std=tuple(data_spec.std))
    return LogitDistillationTask(student_model=net, teacher_model=DistillationTeacher(teacher, device=device),
                                 criterion=criterion, temperature=temperature, distill_loss_weight=distill_weight,
                                 task_loss_weight=task_weight, device=device, verbose=False)


AMP = {"bf16": "bfloat16", "fp16": "float16"}


def training_parts(model: torch.nn.Module, plan: TrainRecipe, data_spec, dist, steps_per_epoch: int,
                   teacher: torch.nn.Module | None = None, kd_temperature: float = 4.0,
                   distill_weight: float | None = None, task_weight: float | None = None) -> tuple:
    """Everything a recipe trains `model` with, for `engine.train_epochs`: (net: the model on the device, wrapped in
    DDP under torchrun and compiled with `recipe.compile`; optimizer; scheduler; task; mixup or None; EMA or None;
    GradScaler or None). `bench/gpu_check.py` times the same step on synthetic data."""
    recipe = plan.recipe
    net = prepare_model(model, recipe, dist)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch)
    task = make_task(net, plan, data_spec, dist.device, plan.mixing, teacher, kd_temperature, distill_weight,
                     task_weight)
    mixer = None
    if plan.mixing:
        from timm.data import Mixup

        mixer = Mixup(mixup_alpha=plan.mixup, cutmix_alpha=plan.cutmix, label_smoothing=recipe.label_smoothing,
                      num_classes=data_spec.num_classes)
    ema = None
    if plan.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=plan.ema_decay)
    scaler = None
    if dist.device.type == "cuda" and recipe.amp and recipe.amp_dtype == "float16":
        scaler = torch.amp.GradScaler("cuda")
    return net, optimizer, scheduler, task, mixer, ema, scaler
