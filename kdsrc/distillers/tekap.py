"""``tekap``: teacher knowledge perturbation (TeKAP, ICLR 2025).

Perturbed ("synthetic") teachers are the real teacher's logits and/or pooled feature plus
Gaussian noise (``kdsrc.losses.tekap``); the student distils from the clean and the perturbed
teachers. Loss::

    ce_weight·CE
      + logit_weight·[T²·KL(q ‖ p_s) + logit_noisy_weight·Σ_k T²·KL(q̃_k ‖ p_s)]  (logit/both)
      + feat_weight·[CRD(f_s, f_t) + feat_noisy_weight·Σ_k CRD(f_s, f̃_k)]        (feature/both)

``q = t.probs(T)`` (so an Angular-KD ensemble plugs in), ``q̃_k = softmax((0.9·z_t + 0.1·ε_k)/T)``
computed from ``q`` (exactly equal, see ``perturbed_probs``), ``f̃_k = 0.9·f + σ_f·ε_k`` on the
teacher's ``pooled_feat`` before the CRD embedding, fresh ε every step. CRD is the ``crd``
method's :class:`~kdsrc.distillers.crd.ContrastHead` (same embeddings, memory banks, NCE,
negatives; the ``nce_*`` settings are the ``crd`` ones).

``variant`` (what it fixes; the -1 settings take these values):

* ``official`` — mdimtiazh/TeKAP (RepDistiller fork): 3 logit copies
  (``distiller_zoo/Ours_TeKAP_L.py``); ONE feature copy with σ_f = 0.01 (``crd/criterion.py``:
  ``0.9·f + 0.1·(0.1·ε)``). Its CRD quirks are reproduced: the noisy CRD call reuses the clean
  call's student-anchored NCE term (the same tensor is counted twice: ``s₁ + t₁ + s₁ + t̃``),
  and the memory is updated twice per step (the noisy call scores against the banks already
  updated by the clean call, then updates them again: student bank twice with the same
  embedding, teacher bank with the noisy one last).
* ``angularkd`` — TeKAP as re-implemented in june6423/Angular-KD (``CRD.py``, TEKAP branch,
  ``configs/cifar100/tekap/crd.yaml``): 3 logit copies and 3 feature copies, σ_f = 0.1; each
  noisy CRD call is a full reference CRD call (its own student-anchored term) and updates the
  memory (4 calls, 4 updates per step). ``noisy_loss: dkd`` reproduces its ``TEKAP.DKD``
  switch (the noisy KL terms become ``min(epoch/dkd_warmup,1)·DKD(s, q̃_k)``; that repo weights
  them 1, i.e. set ``logit_noisy_weight: 1.0``). Not reproduced: its clean and noisy KL terms
  are also multiplied by the CRD CE weight (1 in every config), and it computes an unused CE
  of a perturbed-teacher ensemble.

``sequential_memory: false`` switches the memory quirk off for both variants: every CRD call of
a step scores against the banks as they were at the start of the step, and the banks are
updated once, with the clean embeddings (then the official double-counted student term is the
student term of the noisy call, which is the same value).

Weights: defaults are the official README's "TeKAP (F+L)" command (``-r 1 -a 1 -b 0.8``) and
equally the Angular-KD TeKAP config (CE + [KL + 0.8·Σ₃KL] + 0.8·CRD + 0.8·Σ₃CRD). The README's
logit-only command is ``level: logit, ce_weight: 0.1, logit_weight: 0.9``; its feature-only
command is ``level: feature`` with the defaults (``-a 0 -b 0.8``).

Memory banks count in ``extra_params`` when a CRD head is built (level feature/both), as for
``crd``.
"""

from __future__ import annotations


from ..losses.dkd import dkd_loss
from ..losses.kd import kd_loss_from_probs
from ..losses.tekap import perturb, perturbed_probs
from .base import Distiller
from ..settings import Setting, choice, flag, temperature, weight
from .crd import CONTRAST_SETTINGS, build_contrast_head, check_nce_k
from .dkd import dkd_settings
from .registry import register

VARIANTS = ("official", "angularkd")
LEVELS = ("both", "logit", "feature")
NOISY_LOSSES = ("kl", "dkd")
#: what each variant fixes: perturbed copies per level and the feature noise scale
VARIANT_RECIPE = {
    "official": {"logit_copies": 3, "feat_copies": 1, "feat_noise": 0.01, "reuse_s_term": True},
    "angularkd": {"logit_copies": 3, "feat_copies": 3, "feat_noise": 0.1, "reuse_s_term": False},
}


@register
class TeKAP(Distiller):
    name = "tekap"
    summary = ("TeKAP: KD + CRD towards the teacher and noise-perturbed copies of its logits "
               "(0.9z+0.1ε) and pooled feature; variant official|angularkd")
    #: logit terms read the teacher's logits, feature terms its pooled feature
    cache_needs = frozenset({"logits", "pooled_feat"})
    declared = (
        choice("variant", "official", VARIANTS, "whose TeKAP: the official code or Angular-KD's "
               "re-implementation (copies and feature noise)"),
        choice("level", "both", LEVELS, "perturb the logits, the pooled feature, or both"),
        weight("ce_weight", 1.0, "weight of the cross-entropy (-r)"),
        weight("logit_weight", 1.0, "weight of the clean KL term (-a)"),
        weight("feat_weight", 0.8, "weight of the clean CRD term (-b)"),
        temperature("temperature", 4.0),
        Setting("keep", 0.9, "share of the teacher in keep·z + (1-keep)·noise", low=0.0,
                high=1.0),
        Setting("logit_noise", 0.1, "σ of the logit noise", low=0.0),
        Setting("feat_noise", -1.0, "σ of the feature noise", low=0.0, also=(-1,)),
        Setting("logit_copies", -1, "perturbed logit copies", type="integer", low=0, also=(-1,)),
        Setting("feat_copies", -1, "perturbed feature copies", type="integer", low=0, also=(-1,)),
        weight("logit_noisy_weight", 0.8, "weight of each noisy KL term"),
        weight("feat_noisy_weight", 1.0, "weight of each noisy CRD term"),
        flag("sequential_memory", True, "the official double memory update per step"),
        choice("noisy_loss", "kl", NOISY_LOSSES, "the noisy logit terms: KL or DKD"),
        *dkd_settings("dkd_"),
        *CONTRAST_SETTINGS,
    )

    @classmethod
    def check_dataset(cls, settings, facts):
        if settings["level"] in ("both", "feature"):
            check_nce_k(settings, facts)

    def __init__(self, student, teacher, settings, ctx):
        super().__init__(student, teacher, settings, ctx)
        s = self.settings
        recipe = VARIANT_RECIPE[s["variant"]]
        self.logit_copies = self._variant_value("logit_copies", recipe)
        self.feat_copies = self._variant_value("feat_copies", recipe)
        self.feat_noise = self._variant_value("feat_noise", recipe)
        self.reuse_s_term = recipe["reuse_s_term"]
        self.use_logit = s["level"] in ("both", "logit")
        self.use_feat = s["level"] in ("both", "feature")
        self.contrast = build_contrast_head(s, ctx) if self.use_feat else None

    def _variant_value(self, key: str, recipe: dict):
        value = self.settings[key]
        return recipe[key] if value == -1 else value

    def extra_modules(self):
        return [self.contrast] if self.contrast is not None else []

    def extra_param_count(self) -> int:
        banks = self.contrast.bank_size() if self.contrast is not None else 0
        return super().extra_param_count() + banks

    # -- the two levels ----------------------------------------------------------------------
    def logit_terms(self, logits, y, t, state) -> dict:
        s = self.settings
        T = s["temperature"]
        q = t.probs(T)
        out = {"loss_kd": s["logit_weight"] * kd_loss_from_probs(logits, q, temperature=T)}
        if self.logit_copies == 0:
            return out
        w = s["logit_weight"] * s["logit_noisy_weight"]
        noisy = 0.0
        if s["noisy_loss"] == "kl":
            for _ in range(self.logit_copies):
                q_k = perturbed_probs(q, temperature=T, keep=s["keep"],
                                      noise_scale=s["logit_noise"])
                noisy = noisy + kd_loss_from_probs(logits, q_k, temperature=T)
            out["loss_kd_noisy"] = w * noisy
        else:
            Td = s["dkd_temperature"]
            q_d = q if Td == T else t.probs(Td)
            for _ in range(self.logit_copies):
                q_k = perturbed_probs(q_d, temperature=Td, keep=s["keep"],
                                      noise_scale=s["logit_noise"])
                noisy = noisy + dkd_loss(logits, q_k, y, alpha=s["dkd_alpha"], beta=s["dkd_beta"],
                                         temperature=Td)
            out["loss_dkd_noisy"] = (w * state.ramp(s["dkd_warmup"])) * noisy
        return out

    def feat_terms(self, f_s, f_t, index) -> dict:
        s = self.settings
        head = self.contrast
        sequential = s["sequential_memory"]
        idx = head.sample(index)
        v_s, v_t = head.embed(f_s, f_t)
        sc_s, sc_t = head.score(v_s, v_t, idx)
        s_clean = head.nce(sc_s)
        out = {"loss_crd": s["feat_weight"] * (s_clean + head.nce(sc_t))}
        if sequential:
            head.update(index, v_s, v_t)
        if self.feat_copies == 0:
            if not sequential:
                head.update(index, v_s, v_t)
            return out
        noisy = 0.0
        for _ in range(self.feat_copies):
            v_tk = head.embed_t(perturb(f_t, keep=s["keep"], noise_scale=self.feat_noise))
            sc_sk, sc_tk = head.score(v_s, v_tk, idx)
            s_term = s_clean if self.reuse_s_term else head.nce(sc_sk)
            noisy = noisy + s_term + head.nce(sc_tk)
            if sequential:
                head.update(index, v_s, v_tk)
        if not sequential:
            head.update(index, v_s, v_t)
        out["loss_crd_noisy"] = (s["feat_weight"] * s["feat_noisy_weight"]) * noisy
        return out

    def forward_train(self, x, y, batch, state):
        s = self.settings
        logits, feats = self.student(x)
        t = self.teacher_outputs(x, y, batch)
        losses = {"loss_ce": s["ce_weight"] * self.ce(logits, y, batch)}
        if self.use_logit:
            losses.update(self.logit_terms(logits, y, t, state))
        if self.use_feat:
            losses.update(self.feat_terms(feats["pooled_feat"], t.feats["pooled_feat"],
                                          batch.index))
        return logits, losses
