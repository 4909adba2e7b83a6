"""The distiller interface every method implements.

A distiller receives the student, the (frozen) teacher and its resolved method settings; each
training step it returns the student logits and a dict of named loss terms, which the engine
sums and logs one by one. Extra trainable modules (CRD embeddings, view branches, projectors)
are declared through :meth:`Distiller.extra_modules`; their parameters are optimised with the
student's and counted in the eval record.

The teacher is deliberately *not* a registered submodule: ``state_dict()`` of a distiller holds
exactly what training changes (student + extras), which is what the resume checkpoint stores,
and ``.train()`` can never switch the teacher out of eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..dataset_facts import DatasetFacts
from ..settings import Setting, check_all, defaults_of, without_new_defaults


@dataclass
class DistillContext:
    """Facts about the run that a distiller may need when it is built."""

    num_classes: int
    num_train: int
    epochs: int
    device: torch.device
    train_labels: torch.Tensor | None = None
    #: the uint8 training images on the device (N x 3 x H x W), for methods that build their own
    #: views of a sample (MLKD's strong augmentation); ``batch.index`` indexes it
    train_images: torch.Tensor | None = None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    pad: int = 4
    flip: bool = True
    image_size: int = 32
    #: the student's and teacher's feature geometry, measured by one dry forward (see
    #: :func:`kdsrc.models.feature_dims`); distillers size their projectors from it
    student_dims: dict[str, Any] = field(default_factory=dict)
    teacher_dims: dict[str, Any] = field(default_factory=dict)
    #: an open :class:`kdsrc.cache.TeacherCache` when the run reads precomputed teacher outputs
    #: (the engine opens it only if it holds the method's ``cache_needs``), else None
    teacher_cache: Any = None
    #: label smoothing of the student's cross-entropy (``solver.label_smoothing``)
    label_smoothing: float = 0.0


def facts_of_labels(labels: torch.Tensor, *, name: str, num_classes: int | None = None
                    ) -> DatasetFacts:
    """The :class:`DatasetFacts` of the training labels a run actually has (a dataset's subset,
    synthetic data): what :meth:`Distiller.check_dataset` checks when a distiller is built."""
    labels = torch.as_tensor(labels).reshape(-1).to(torch.int64).cpu()
    counts = torch.bincount(labels) if labels.numel() else torch.zeros(1, dtype=torch.int64)
    return DatasetFacts(name, classes=num_classes or int(counts.numel()),
                        train_images=int(labels.numel()), test_images=0,
                        largest_class=int(counts.max()))


def facts_of(ctx: DistillContext) -> DatasetFacts:
    """The facts of the data a distiller is built for (its context)."""
    if ctx.train_labels is not None:
        return facts_of_labels(ctx.train_labels, name="this run's training data",
                               num_classes=ctx.num_classes)
    return DatasetFacts("this run's training data", classes=ctx.num_classes,
                        train_images=ctx.num_train, test_images=0, largest_class=0)


@dataclass
class TeacherOutputs:
    """What a distiller sees of the teacher for one batch.

    ``logits`` and ``feats`` (the model's feature dict) come from the frozen teacher, or from a
    precomputed teacher cache. ``probs(T)`` gives the teacher's target distribution at
    temperature T; wrappers such as Angular-KD replace it (the ensemble of views and teacher) and
    replace ``feats["pooled_feat"]`` (the ensemble feature) without the base method knowing.
    Losses that distil probabilities must therefore use ``probs(T)``, not ``logits``.
    """

    logits: torch.Tensor | None
    feats: dict[str, Any]
    prob_fn: Callable[[float], torch.Tensor] | None = None

    def probs(self, temperature: float) -> torch.Tensor:
        if self.prob_fn is not None:
            return self.prob_fn(temperature)
        return F.softmax(self.logits.float() / float(temperature), dim=1)


@dataclass
class StepState:
    """Where training is: 1-based epoch (as mdistiller counts for its loss ramps) and global step.

    ``epoch_t``: the same epoch as a float32 tensor on the run's device, which the engine sets
    at the start of every epoch. A CUDA-graphed step (:mod:`kdsrc.engine.capture`) is recorded
    once and replayed in later epochs, so anything that changes with the epoch must be read
    from a device tensor, not from the Python int: methods take their loss ramps from
    :meth:`ramp`, never from ``epoch`` directly."""

    epoch: int
    step: int
    epochs: int
    epoch_t: torch.Tensor | None = None

    def ramp(self, warmup: int) -> float | torch.Tensor:
        """The reference loss ramp ``min(epoch / warmup, 1)`` (warmup 0: 1): a device tensor
        when ``epoch_t`` is set, else a float (a step outside the engine, e.g. a unit test)."""
        if warmup <= 0:
            return 1.0
        if self.epoch_t is None:
            return min(float(self.epoch) / float(warmup), 1.0)
        return torch.clamp(self.epoch_t / float(warmup), max=1.0)


class Distiller(nn.Module):
    """Base class. Subclasses set ``name``, ``declared`` and implement :meth:`forward_train`."""

    name: ClassVar[str] = ""
    #: the method's settings, each declared once (name, type, reference default, allowed
    #: values, meaning): they validate every run when a plan loads and in ``kdsrc train``
    declared: ClassVar[tuple[Setting, ...]] = ()
    #: ``{name: default}`` of ``declared`` (derived, never written by hand)
    defaults: ClassVar[dict[str, Any]] = {}
    #: whether the method needs a teacher network (``vanilla`` does not)
    needs_teacher: ClassVar[bool] = True
    #: one line for ``kdsrc methods`` and the README
    summary: ClassVar[str] = ""
    #: what of the teacher the method reads through :meth:`teacher_outputs`: a subset of
    #: ``{"logits", "pooled_feat"}`` lets a precomputed teacher cache (:mod:`kdsrc.cache`) stand in
    #: for the teacher forward; None (methods that read feature maps, or run the teacher on
    #: other inputs than the batch's own augmented images) = the method cannot use a cache
    cache_needs: ClassVar[frozenset[str] | None] = None
    #: the step time relative to KD's, for the plan's cost estimate (kdsrc.plancost); the
    #: measured ones are from the DKD paper's figure (mdistiller .github/dkd.png: KD 11 ms,
    #: CRD 41, ReviewKD 26, DKD 11 per batch of 64), the others are assumed 1
    cost_factor: ClassVar[float] = 1.0
    #: the setting through which a run reads the file of the method's stage 1 (the pipeline's
    #: ``pretrain_views`` rule writes it; the plan sets it), or None: no stage 1
    stage_one_setting: ClassVar[str | None] = None
    #: None: the method's step can be captured as a CUDA graph (:mod:`kdsrc.engine.capture`);
    #: else why not (shown by ``kdsrc methods -v``; such a run trains eagerly)
    capture_blocker: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.defaults = defaults_of(cls.declared)

    # -- hooks the pipeline calls before anything is built (plans load without the data) -------
    @classmethod
    def finalize_settings(cls, settings: dict[str, Any] | None) -> dict[str, Any]:
        """The complete, checked settings of a run: defaults filled in, every declared value
        checked, then whatever depends on several settings. Idempotent. Methods with presets
        (Angular-KD) also fill in what the preset implies, so the run config and the eval record
        hold concrete values."""
        return check_all(cls.declared, settings, prefix="method.",
                         unknown=f"setting for method {cls.name!r}")

    @classmethod
    def canonical_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """Finalized settings as they enter the run's identity (``config_hash``, rule params):
        without the settings declared ``identity_at_default=False`` that hold their default."""
        return without_new_defaults(cls.declared, settings)

    @classmethod
    def check_dataset(cls, settings: dict[str, Any], facts: DatasetFacts) -> None:
        """Checks of finalized settings against what a dataset declares statically (classes,
        training images, largest class); raise :class:`ConfigError` naming the key."""

    @classmethod
    def needs_pretrained_views(cls, settings: dict[str, Any]) -> bool:
        """Whether a run with these settings reads views trained by the pipeline's stage-1 rule
        (``pretrain_views``) before it starts."""
        return False

    @classmethod
    def stage_one_epochs(cls, settings: dict[str, Any]) -> int:
        """Epochs of a run's stage 1 (0: none), for the plan's cost estimate."""
        return 0

    @classmethod
    def cost_base(cls, settings: dict[str, Any]) -> str:
        """The method whose per-sample cost a run of this one has (a wrapper: its base)."""
        return cls.name

    @classmethod
    def capture_blocker_for(cls, settings: dict[str, Any] | None) -> str | None:
        """Why a run with these settings cannot capture its step as a CUDA graph, or None.
        Most methods are capturable or not whatever their settings."""
        return cls.capture_blocker

    @classmethod
    def cache_needs_for(cls, settings: dict[str, Any] | None) -> frozenset[str] | None:
        """What a run with these settings reads of a teacher cache (None: it cannot use one),
        known before anything is built, so the engine opens a cache only for a run that will
        read it. Most methods read the same whatever their settings."""
        return cls.cache_needs

    def __init__(self, student: nn.Module, teacher: nn.Module | None, settings: dict[str, Any],
                 ctx: DistillContext):
        super().__init__()
        self.student = student
        self._teacher = [teacher]  # a list keeps it out of state_dict() and .train()
        self.settings = dict(settings)
        self.ctx = ctx
        #: optional hook ``(TeacherOutputs, x, y, batch) -> TeacherOutputs`` (Angular-KD views)
        self.teacher_transform: Callable[..., TeacherOutputs] | None = None
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)

    # -- the contract ------------------------------------------------------------------------
    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0]

    def forward_train(self, x: torch.Tensor, y: torch.Tensor, batch: Any, state: StepState
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return ``(student_logits, {loss_name: scalar tensor})`` for one training batch."""
        raise NotImplementedError

    def extra_modules(self) -> list[nn.Module]:
        """Trainable modules besides the student (optimised with it, counted in the record)."""
        return []

    def epoch_metrics(self) -> dict[str, float]:
        """Per-epoch scalars the method wants in the CSV log (reset by the method itself)."""
        return {}

    # -- derived helpers ---------------------------------------------------------------------
    def ce(self, logits: torch.Tensor, y: torch.Tensor, batch: Any = None, *,
           label_smoothing: float | None = None) -> torch.Tensor:
        """The student's cross-entropy, in float32: against the soft targets of a mixed batch
        (mixup/cutmix, ``batch.y_soft``: timm's SoftTargetCrossEntropy), else against the labels
        with the run's label smoothing (``label_smoothing`` overrides it)."""
        soft = getattr(batch, "y_soft", None)
        if soft is not None:
            return torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        ls = self.ctx.label_smoothing if label_smoothing is None else label_smoothing
        return F.cross_entropy(logits.float(), y, label_smoothing=ls)

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = list(self.student.parameters())
        for m in self.extra_modules():
            params.extend(p for p in m.parameters() if p.requires_grad)
        return params

    def extra_param_count(self) -> int:
        return sum(p.numel() for m in self.extra_modules() for p in m.parameters())

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def to(self, *args, **kwargs) -> "Distiller":
        super().to(*args, **kwargs)
        if self.teacher is not None:
            self.teacher.to(*args, **kwargs)
        return self

    @torch.no_grad()
    def teacher_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return self.teacher(x)

    def teacher_outputs(self, x: torch.Tensor, y: torch.Tensor, batch: Any) -> TeacherOutputs:
        """The teacher's view of this batch, passed through ``teacher_transform`` if one is set.

        Every distiller gets its teacher targets here, which is where a teacher cache or an
        Angular-KD view ensemble plugs in. With a teacher cache in the context that holds the
        method's ``cache_needs``, and a training ``batch`` that carries its augmentation
        (``index``, ``dy``, ``dx``, ``flip``; or ``view``, its stored augmented view), the logits
        and ``feats["pooled_feat"]`` come from the cache (float32) and the teacher is not run;
        ``x`` must then be that batch's images.
        """
        cache = getattr(self.ctx, "teacher_cache", None)
        if (cache is not None and (getattr(batch, "dy", None) is not None
                                   or getattr(batch, "view", None) is not None)
                and cache.satisfies(self.cache_needs)):
            logits, pooled = cache.lookup(batch.index, batch.dy, batch.dx, batch.flip,
                                          view=getattr(batch, "view", None),
                                          pooled="pooled_feat" in self.cache_needs)
            out = TeacherOutputs(logits=logits,
                                 feats={} if pooled is None else {"pooled_feat": pooled})
        else:
            logits, feats = self.teacher_forward(x)
            out = TeacherOutputs(logits=logits, feats=feats)
        if self.teacher_transform is not None:
            out = self.teacher_transform(out, x, y, batch)
        return out
