"""The methods' loss maths as pure functions: tensors in, tensor out.

Hyperparameters are keyword arguments with the reference defaults; each docstring gives the
formula and the file of the reference implementation it follows.
"""

from .kd import kd_loss, kd_loss_from_probs

__all__ = ["kd_loss", "kd_loss_from_probs"]
from . import crd, dkd, reviewkd, tekap  # noqa: F401  (kdsrc.losses.dkd.dkd_loss, .crd.nce_loss, .reviewkd.hcl_loss, .tekap.perturb, ...)
from .rsd import batch_standardize, rsd_loss  # noqa: E402,F401
from . import angular  # noqa: F401,E402  (kdsrc.losses.angular.feature_inter_loss, ensemble_probs, ...)
from . import mlkd, ldrld  # noqa: F401,E402  (kdsrc.losses.mlkd.mlkd_loss_terms, .ldrld.ldrld_loss, ...)
