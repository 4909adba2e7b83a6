"""``angularkd``: Angular-KD (NeurIPS 2025, june6423/Angular-KD) as a wrapper around a base distiller.

N lightweight view branches (:class:`~kdsrc.distillers.views.ViewGenerator`) sit on the frozen
teacher's pooled feature; four angular losses plus the views' own cross-entropy (L_aux, see
:mod:`kdsrc.losses.angular`) keep every view within an angular margin of the teacher while
spreading the views apart; the weighted ensemble of views and teacher replaces the teacher's
targets for the base method: ``probs(T)`` becomes ``q = Σ α σ_τ(z_i) + β σ_τ(z_t)`` and
``feats["pooled_feat"]`` becomes ``f_ens = Σ α v_i + β f`` (other feature maps unchanged).

How it plugs in: the wrapper builds the base distiller (``base`` ∈ kd, crd, dkd, mlkd, reviewkd,
with ``base_settings``) and installs ``base.teacher_transform = self._augment``. The base asks
for teacher outputs as usual (``teacher_outputs()``); ``_augment`` runs the views on them, stashes
L_aux (first call of the step only — MLKD asks twice, weak and strong, and the reference computes
L_aux on the weak pass only) and returns the ensemble. ``forward_train`` = the base's loss terms +
``loss_view_ce, loss_feat_inter, loss_feat_intra, loss_logit_inter, loss_logit_intra``. The
student is owned (registered) by the base, so the resume checkpoint holds it once.

What each base gets (the ``official`` / ``clean`` presets also set these base settings unless
``base_settings`` gives them):

* ``crd`` (main Angular-KD, ``angularkd/crd.yaml``): CE + ``kd_weight``·T²KL(q‖σ_T(s)) +
  0.8·CRD(g_s, f_ens); preset ``kd_weight: 1.0``. "Angular-KD + DKD" (``configs/cifar100/dkd``) is
  this base with ``dkd_weight: 0.3`` (and ``dkd_beta``).
* ``kd`` (``KD.py`` DIV branch): 0.1·CE + T²KL(q‖σ_T(s)) — the reference does **not** apply
  KD_WEIGHT 0.9 on this path, so the presets set ``kd_weight: 1.0``.
* ``reviewkd`` (``ReviewKD.py``): ReviewKD HCL with the last level replaced by f_ens, plus a
  KD term to q (the presets set ``kd_weight: 1.0`` where the base has that setting).
* ``mlkd`` (``CRD_mlkd.py`` + ``MLKD_div.py``): MLKD's multi-temperature losses on ensembles
  formed at each asked temperature; the official preset sets ``bc_double_softmax: true``
  (``MLKD_div.bc_loss`` softmaxes the ensemble probabilities again), clean sets false. The
  reference also adds 0.8·CRD(g_s, f_ens) on this path; that term is **not** added here (the
  mlkd base has no CRD part) — a documented difference.
* ``dkd``: plain DKD towards q (no reference counterpart; the reference's DKD plug-in is the
  crd base above).

Joint views receive the base's gradients through q and f_ens, as at HEAD. On the mlkd base with
the l2 ensemble (Σw = 2.44) the class-correlation term grows ~Σw² and jointly trained views
diverge at the student's LR on digits; the reference never trains them there (official preset:
pretrained views), and the clean preset (l1) trains them stably.

Settings (defaults and reasons). ``None`` on a switch means "take it from the preset"; the
preset bundle is applied first, then every explicitly given setting wins.
:meth:`AngularKD.finalize_settings` does the resolution (the constructor calls it, and the
config resolution can call it so that the eval record's ``switches`` shows resolved values).

* ``base`` = ``"crd"``: the main Angular-KD configuration is the CRD distiller.
* ``base_settings`` = ``{}``: passed to the base's ``resolve_settings`` (after the preset's
  plug-in settings); resolved in full, so the record shows the base's settings too.
* ``preset`` = ``"official"``: this is a reproduction pipeline; ``official`` is the reference
  code's behaviour minus its crashes. Bundles (switch: official / clean / none):

  - ``views``: official = ``joint`` on crd and dkd (HEAD trains the views with the student on
    the CRD path), ``pretrained`` on kd, mlkd, reviewkd (the reference never optimises the
    views there, so without ``--pretrained_ckpt`` they stay random; the two-stage pipeline is the
    only working choice); clean = ``joint`` everywhere; none = ``joint``.
  - ``angles``: official = ``official``; clean = ``exact``; none = ``official``.
  - ``ensemble_norm``: official = ``l2`` (HEAD); clean = ``l1`` (a probability target); none = ``l2``.
  - ``teacher_input_aug``: ``off`` in all three (the submission-era and HEAD code have none).
  - ``ensemble_temperature``: official = ``4.0`` (hard-coded ``temp=4`` of
    ``TeacherEnsemble.forward``) except ``"loss"`` on mlkd (the reference's ``various_temp``
    path forms one ensemble per MLKD temperature); clean = ``"loss"``; none = ``4.0``.
  - base settings: official and clean set the plug-in definitions above (they differ only in
    mlkd's ``bc_double_softmax``); none sets nothing.

* ``views`` ∈ joint | pretrained | finetune. ``joint``: views from random init, optimised with
  the student at its learning rate by L_aux + the base's gradients through q and f_ens (HEAD CRD
  path). ``pretrained``: load ``views_checkpoint`` (stage 1, ``kdsrc pretrain-views``) and freeze
  it (submission-era pipeline). ``finetune``: load it and keep training jointly (README
  "Example 2" on the HEAD CRD path). ``pretrained``/``finetune`` without an existing
  ``views_checkpoint`` is a ConfigError.
* ``views_checkpoint`` = ``None``: the views file (a location: excluded from the config hash; the
  file's meta must match this run's teacher and view-training settings, else ConfigError).
* ``frozen_views_mode`` = ``"train"``: frozen views stay in train mode (dropout on, BN batch
  statistics, running stats drifting), as the reference trainer calls ``view_generator.train()``
  every epoch; ``"eval"`` freezes them completely.
* ``angles`` ∈ official | exact, ``ensemble_norm`` ∈ l1 | l2: see :mod:`kdsrc.losses.angular`.
* ``teacher_input_aug`` ∈ off | on: ``on`` = the July–December 2025 code's flip + ColorJitter +
  rotation on the teacher's (normalised) input batch, one draw per batch (needs the live
  teacher, not a teacher cache). YAML ``off``/``on`` (booleans) are accepted.
* ``ensemble_temperature``: τ of the ensemble q; a number, or ``"loss"`` = the temperature the
  asking loss uses (note: unlike a plain ``null``, which means "from the preset").
* ``angular_temperature`` = ``None`` → the base's ``temperature`` (or ``kd_temperature``)
  setting, else 4.0: the logit angular losses use ``cfg.KD.TEMPERATURE`` in the reference (4 on
  CIFAR, 1 on ImageNet).
* ``num_views`` = 5 (every reference config; at most 6, the length of the per-view lists),
  ``margin_feat`` = ``margin_logit`` = 0.2 (logit margin 0.1 before commit 20a0c63), ``kappa`` = 0.07.
* weights ``w_feat_inter`` 0.1, ``w_feat_intra`` 1.0, ``w_logit_inter`` 1.0, ``w_logit_intra`` 1.0
  (``cfg.DIV``; the reviewkd and ImageNet configs set the feature weights to 0 — plan settings),
  ``w_view_ce`` 0.8 on the **sum** over views of CE(z_i, y).
* ``view_weight`` 0.8, ``teacher_weight`` 1.0: raw ensemble weights before normalisation.
* ``pretrain_epochs`` 30, ``pretrain_lr`` 0.1, ``pretrain_milestones`` [10, 20]: the stage-1
  recipe (``configs/cifar100/pretrain.yaml``; its stage 30 never fires in 30 epochs), used by
  ``kdsrc pretrain-views`` and checked against the views file, so the run's config hash covers
  how its views were made.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from ..losses import angular as A
from ..settings import Setting, choice, temperature, weight
from .base import Distiller, TeacherOutputs
from .registry import build_distiller, get_method, register, resolve_settings
from .views import (MAX_VIEWS, AngularRecipe, TeacherInputAugment, ViewGenerator, ViewMeter,
                    check_views_meta, load_views_file, teacher_fingerprint)

BASES = ("kd", "crd", "dkd", "mlkd", "reviewkd")
PRESETS = ("official", "clean", "none")
VIEW_MODES = ("joint", "pretrained", "finetune")
FROZEN_VIEW_MODES = ("train", "eval")
#: switches a preset fills in when the run config leaves them unset (None)
PRESET_KEYS = ("views", "angles", "ensemble_norm", "teacher_input_aug", "ensemble_temperature")
#: the plug-in definitions: base settings a preset sets (unless base_settings gives them, and
#: only if the base has that setting)
_PLUGINS = {
    "kd": {"kd_weight": 1.0},        # KD.py DIV branch: T²·KL(q‖p_s) without KD_WEIGHT 0.9
    "crd": {"kd_weight": 1.0},       # CRD.py DIV branch: + T²·KL(q‖p_s), weight 1
    "reviewkd": {"kd_weight": 1.0},  # ReviewKD.py DIV branch: + T²·KL(q‖p_s), weight 1
}
PLUGIN_BASE_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    # MLKD_div.bc_loss applies a second softmax to the ensemble probabilities (reproduced)
    "official": {**_PLUGINS, "mlkd": {"bc_double_softmax": True}},
    "clean": {**_PLUGINS, "mlkd": {"bc_double_softmax": False}},
    "none": {},
}
#: the aux loss terms the wrapper adds to the base's
AUX_TERMS = ("loss_view_ce", "loss_feat_inter", "loss_feat_intra", "loss_logit_inter",
             "loss_logit_intra")


def preset_switches(preset: str, base: str) -> dict[str, Any]:
    """The switch bundle of ``preset`` for ``base`` (see the module docstring)."""
    if preset == "official":
        return {"views": "joint" if base in ("crd", "dkd") else "pretrained", "angles": "official",
                "ensemble_norm": "l2", "teacher_input_aug": "off",
                "ensemble_temperature": "loss" if base == "mlkd" else 4.0}
    if preset == "clean":
        return {"views": "joint", "angles": "exact", "ensemble_norm": "l1",
                "teacher_input_aug": "off", "ensemble_temperature": "loss"}
    if preset == "none":
        return {"views": "joint", "angles": "official", "ensemble_norm": "l2",
                "teacher_input_aug": "off", "ensemble_temperature": 4.0}
    raise ConfigError(f"method.preset: expected one of {', '.join(PRESETS)}, got {preset!r}")


@register
class AngularKD(Distiller):
    name = "angularkd"
    summary = ("Angular-KD: N view branches on the teacher feature, angular diversity losses, "
               "ensemble of views + teacher fed to a base distiller (crd, kd, dkd, mlkd, reviewkd)")
    #: the views read the teacher's logits and pooled feature, so a teacher cache must hold both
    #: (the base reads it only if its own needs allow, see ``__init__``)
    cache_needs = frozenset({"logits", "pooled_feat"})
    declared = (
        choice("base", "crd", BASES, "the distiller the view ensemble feeds"),
        Setting("base_settings", {}, "the base distiller's settings (checked as that method's)",
                type="mapping"),
        choice("preset", "official", PRESETS, "switch bundle for the settings left null: the "
               "official code, a clean reading of the paper, or none"),
        choice("views", None, VIEW_MODES, "view branches trained jointly, pretrained (stage 1), "
               "or pretrained then fine-tuned", nullable=True),
        Setting("views_checkpoint", None, "stage-1 views file (the pipeline sets it)",
                type="path", nullable=True),
        choice("frozen_views_mode", "train", FROZEN_VIEW_MODES, "BatchNorm mode of frozen views"),
        choice("angles", None, A.ANGLES, "angle computation: as coded, or exact", nullable=True),
        choice("ensemble_norm", None, A.ENSEMBLE_NORMS, "normalisation of the ensemble weights",
               nullable=True),
        choice("teacher_input_aug", None, ("off", "on"), "augment the teacher's input (live "
               "teacher only)", nullable=True, also=(True, False)),
        Setting("ensemble_temperature", None, "temperature of the view ensemble, or 'loss' (the "
                "base's)", above=0.0, nullable=True, also=("loss",)),
        Setting("angular_temperature", None, "temperature of the angular logit losses (default: "
                "the base's)", above=0.0, nullable=True),
        Setting("num_views", 5, "view branches", type="integer", low=2, high=MAX_VIEWS),
        Setting("margin_feat", 0.2, "angular margin of the feature losses", low=0.0, high=2.0),
        Setting("margin_logit", 0.2, "angular margin of the logit losses", low=0.0, high=2.0),
        temperature("kappa", 0.07, "temperature of the angular intra losses"),
        weight("w_feat_inter", 0.1, "weight of the feature inter-view loss"),
        weight("w_feat_intra", 1.0, "weight of the feature view-teacher loss"),
        weight("w_logit_inter", 1.0, "weight of the logit inter-view loss"),
        weight("w_logit_intra", 1.0, "weight of the logit view-teacher loss"),
        weight("w_view_ce", 0.8, "weight of the views' cross-entropy"),
        weight("view_weight", 0.8, "weight of the views in the ensemble"),
        weight("teacher_weight", 1.0, "weight of the teacher in the ensemble"),
        Setting("pretrain_epochs", 30, "stage-1 view pretraining epochs", type="integer", low=1),
        Setting("pretrain_lr", 0.1, "stage-1 learning rate", above=0.0),
        Setting("pretrain_milestones", [10, 20], "stage-1 LR decay epochs", type="integers",
                low=0, increasing=True),
    )

    @classmethod
    def cache_needs_for(cls, settings: dict[str, Any] | None) -> frozenset[str] | None:
        """The base's needs plus the pooled feature and logits the views read; None when the
        base cannot use a cache, or with ``teacher_input_aug: on`` (the teacher then runs on
        augmented inputs, which no cache holds)."""
        s = cls.finalize_settings(settings)
        if s["teacher_input_aug"] == "on":
            return None
        base_needs = get_method(s["base"]).cache_needs_for(s["base_settings"])
        return None if base_needs is None else frozenset(base_needs) | cls.cache_needs

    @classmethod
    def capture_blocker_for(cls, settings: dict[str, Any] | None) -> str | None:
        """The base's reason, or the teacher-input augmentation's (torchvision draws one
        flip / colour jitter / rotation per batch on the host)."""
        s = cls.finalize_settings(settings)
        if s["teacher_input_aug"] == "on":
            return ("teacher_input_aug: on draws each batch's flip, colour jitter and rotation "
                    "on the host")
        reason = get_method(s["base"]).capture_blocker_for(s["base_settings"])
        return f"base {s['base']}: {reason}" if reason else None

    # -- settings resolution -----------------------------------------------------------------
    @classmethod
    def finalize_settings(cls, settings: dict[str, Any] | None) -> dict[str, Any]:
        """Resolve a settings mapping (partial or registry-resolved) into concrete values.

        Preset bundle first, explicit settings win; validates every value; resolves
        ``base_settings`` through the base's own ``resolve_settings``. Idempotent: resolved
        settings come back unchanged.
        """
        given = dict(settings or {})
        given.pop("name", None)
        s = super().finalize_settings(given)
        base_cls = get_method(s["base"])
        bundle = preset_switches(s["preset"], s["base"])
        for key in PRESET_KEYS:
            if s[key] is None:
                s[key] = bundle[key]
        if isinstance(s["teacher_input_aug"], bool):
            s["teacher_input_aug"] = "on" if s["teacher_input_aug"] else "off"
        base_given = dict(s["base_settings"])
        for key, value in PLUGIN_BASE_SETTINGS[s["preset"]].get(s["base"], {}).items():
            if key in base_cls.defaults:
                base_given.setdefault(key, value)
        try:
            s["base_settings"] = resolve_settings(s["base"], base_given)
        except ConfigError as e:
            raise ConfigError(f"method.base_settings ({s['base']}): {e}") from None
        if s["angular_temperature"] is None:
            bs = s["base_settings"]
            s["angular_temperature"] = float(bs.get("temperature", bs.get("kd_temperature", 4.0)))
        if s["view_weight"] + s["teacher_weight"] <= 0:
            raise ConfigError("method.view_weight, teacher_weight: at least one must be > 0")
        return s

    @classmethod
    def canonical_settings(cls, settings):
        s = super().canonical_settings(settings)
        s["base_settings"] = get_method(settings["base"]).canonical_settings(
            settings["base_settings"])
        return s

    @classmethod
    def check_dataset(cls, settings, facts):
        get_method(settings["base"]).check_dataset(settings["base_settings"], facts)

    stage_one_setting = "views_checkpoint"

    @classmethod
    def stage_one_epochs(cls, settings):
        s = cls.finalize_settings(settings)
        return s["pretrain_epochs"] if s["views"] in ("pretrained", "finetune") else 0

    @classmethod
    def cost_base(cls, settings):
        return cls.finalize_settings(settings)["base"]

    @classmethod
    def needs_pretrained_views(cls, settings: dict[str, Any]) -> bool:
        """Whether a run with these settings reads a stage-1 views file (plan / Snakemake hook)."""
        return cls.finalize_settings(settings)["views"] in ("pretrained", "finetune")

    @staticmethod
    def pretrain_recipe(settings: dict[str, Any]) -> dict[str, Any]:
        """The stage-1 recipe keys of resolved settings (what a views file's meta must match)."""
        return {k: settings[k] for k in ("pretrain_epochs", "pretrain_lr", "pretrain_milestones")}

    # -- construction ------------------------------------------------------------------------
    def __init__(self, student, teacher, settings, ctx):
        settings = self.finalize_settings(settings)
        super().__init__(student, teacher, settings, ctx)
        s = self.settings
        self.base = build_distiller(s["base"], student, teacher, s["base_settings"], ctx)
        # the base owns (registers) the student: keep a plain reference here, so that the
        # resume checkpoint does not hold the student twice
        del self.student
        self.__dict__["student"] = student

        self.recipe = AngularRecipe.from_settings(s)
        dim = ctx.teacher_dims.get("pooled_feat") if ctx.teacher_dims else None
        if not dim:
            raise ConfigError("angularkd: the teacher's pooled feature size is unknown "
                              "(DistillContext.teacher_dims)")
        self.views = ViewGenerator(s["num_views"], int(dim), ctx.num_classes)
        mode = s["views"]
        if mode in ("pretrained", "finetune"):
            self._load_views(s["views_checkpoint"], teacher)
        elif s["views_checkpoint"] is not None:
            raise ConfigError("method.views_checkpoint: only read with views: pretrained or "
                              "finetune (views: joint starts from a random init)")
        self.views_trainable = mode in ("joint", "finetune")
        if not self.views_trainable:
            for p in self.views.parameters():
                p.requires_grad_(False)

        self._weights_cpu = self.recipe.weights()
        self._weights: dict[torch.device, torch.Tensor] = {}
        self.meter = ViewMeter(s["num_views"])
        self._pending: dict[str, torch.Tensor] | None = None
        self._chained = self.base.teacher_transform
        self.base.teacher_transform = self._augment
        self._input_aug = None
        self._aug_applied = False
        # the base reads the teacher outputs (cache or live forward) for both of them
        self.base.cache_needs = type(self).cache_needs_for(s)
        if s["teacher_input_aug"] == "on":
            self._input_aug = TeacherInputAugment()
            self._live_teacher_forward = self.base.teacher_forward
            self.base.teacher_forward = self._augmented_teacher_forward

    def _load_views(self, path: str | None, teacher) -> None:
        if not path:
            raise ConfigError(
                f"method.views: {self.settings['views']!r} needs method.views_checkpoint, the "
                f"views file written by `kdsrc pretrain-views` (preset "
                f"{self.settings['preset']!r}, base {self.settings['base']!r}); or set views: joint")
        state, meta = load_views_file(path)
        check_views_meta(meta, path, recipe=self.recipe, dim=self.views.dim,
                         num_classes=self.views.num_classes,
                         fingerprint=teacher_fingerprint(teacher),
                         pretrain=self.pretrain_recipe(self.settings))
        try:
            self.views.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"views checkpoint {path} does not fit the view branches: "
                                  f"{str(e).splitlines()[0]}") from None

    # -- the distiller contract --------------------------------------------------------------
    def extra_modules(self):
        return list(self.base.extra_modules()) + [self.views]

    def trainable_parameters(self):
        params = list(self.base.trainable_parameters())
        seen = {id(p) for p in params}
        params += [p for p in self.views.parameters() if p.requires_grad and id(p) not in seen]
        return params

    def extra_param_count(self) -> int:
        return self.base.extra_param_count() + sum(p.numel() for p in self.views.parameters())

    def train(self, mode: bool = True) -> "AngularKD":
        super().train(mode)
        if not self.views_trainable and self.settings["frozen_views_mode"] == "eval":
            self.views.eval()
        return self

    def epoch_metrics(self) -> dict[str, float]:
        return {**self.base.epoch_metrics(), **self.meter.compute()}

    def forward_train(self, x, y, batch, state):
        self._pending = None
        logits, losses = self.base.forward_train(x, y, batch, state)
        aux, self._pending = self._pending, None
        if aux is None:
            raise RuntimeError(f"angularkd: base {self.settings['base']!r} never asked for the "
                               f"teacher outputs (Distiller.teacher_outputs); it cannot be wrapped")
        for key, value in aux.items():
            if key in losses:
                raise RuntimeError(f"angularkd: base {self.settings['base']!r} already has a "
                                   f"loss term {key!r}")
            losses[key] = value
        return logits, losses

    # -- the teacher hook --------------------------------------------------------------------
    def _augmented_teacher_forward(self, x):
        self._aug_applied = True
        return self._live_teacher_forward(self._input_aug(x))

    def _ensemble_weights(self, device) -> torch.Tensor:
        w = self._weights.get(device)
        if w is None:
            w = self._weights[device] = self._weights_cpu.to(device)
        return w

    def _augment(self, t: TeacherOutputs, x, y, batch) -> TeacherOutputs:
        """Teacher outputs → view ensemble (the ``teacher_transform`` hook of the base)."""
        if self._chained is not None:
            t = self._chained(t, x, y, batch)
        if self._input_aug is not None:
            if not self._aug_applied:
                raise ConfigError("method.teacher_input_aug: 'on' needs the live teacher forward, "
                                  "but these teacher outputs did not come from it (a teacher "
                                  "cache?); set teacher_cache: off")
            self._aug_applied = False
        feat = t.feats.get("pooled_feat") if t.feats else None
        if feat is None or t.logits is None:
            raise ConfigError("angularkd needs the teacher's logits and pooled feature; a teacher "
                              "cache without pooled features cannot feed the views")
        feat = feat.detach().float()
        logits_t = t.logits.detach().float()
        first = self._pending is None
        outer_grad = torch.is_grad_enabled()
        with torch.set_grad_enabled(self.views_trainable):
            view_feats, view_logits = self.views(feat)
            view_feats, view_logits = view_feats.float(), view_logits.float()
            if first:
                self._pending = self.recipe.aux_losses(feat, logits_t, view_feats, view_logits, y)
        if not outer_grad:
            view_feats, view_logits = view_feats.detach(), view_logits.detach()
        w = self._ensemble_weights(feat.device)
        recipe = self.recipe
        cache: dict[float, torch.Tensor] = {}

        def prob_fn(temperature: float | None) -> torch.Tensor:
            tau = recipe.ensemble_tau(temperature)
            if tau not in cache:
                cache[tau] = A.ensemble_probs(logits_t, view_logits, weights=w, temperature=tau)
            return cache[tau]

        if first and self.training:
            self.meter.update(feat, logits_t, view_feats.detach(), view_logits.detach(),
                              prob_fn(None).detach(), y)
        feats = dict(t.feats)
        feats["pooled_feat"] = A.ensemble_features(feat, view_feats, weights=w)
        return TeacherOutputs(logits=t.logits, feats=feats, prob_fn=prob_fn)
