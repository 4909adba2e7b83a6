"""Training engine: the reference recipe, resumable, with per-epoch CSV and the eval record."""

from .io import atomic_torch_save, atomic_write_json, atomic_write_text
from .loop import RunPaths, evaluate_checkpoint, resolve_device, train
from .progress import Progress
from .record import RECORD_FIELDS
from .schedule import learning_rate

__all__ = ["RunPaths", "train", "evaluate_checkpoint", "resolve_device", "Progress",
           "RECORD_FIELDS", "learning_rate", "atomic_torch_save", "atomic_write_json",
           "atomic_write_text"]
