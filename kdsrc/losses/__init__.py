"""The methods' loss maths as pure functions: tensors in, tensor out.

Hyperparameters are keyword arguments with the reference defaults; each docstring gives the
formula and the file of the reference implementation it follows.
"""

from .kd import kd_loss, kd_loss_from_probs

__all__ = ["kd_loss", "kd_loss_from_probs"]
