"""Safe reading of model checkpoints and strict loading into the zoo's models.

Files come from the network (the published ``cifar_teachers.tar``), so they are never fully
unpickled: ``torch.load(weights_only=True)`` runs with an explicit allow-list of the few extra
types those files hold next to their tensors (argparse.Namespace for the training options, NumPy
scalars and dtypes for logged accuracies). Anything else in the pickle (a custom class,
``os.system``, ...) makes the whole file rejected before it can run.

Accepted layouts: ``{"model": state_dict, ...}`` (RepDistiller/mdistiller teachers and our own
checkpoints, which carry metadata next to "model"), ``{"state_dict": state_dict, ...}`` (timm's
``CheckpointSaver``, as OFA-KD/RSD's teachers were saved) and a bare state dict. A timm model's
file written by an older timm is brought to the installed timm's layout by timm's own checkpoint
filter first (:func:`kdsrc.models.timm_zoo.adapt_checkpoint`). A ``module.`` prefix
on every key (``nn.DataParallel``) is removed. Every failure is a one-line CheckpointError.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from .registry import build_model

_DP_PREFIX = "module."
_NUMPY_DTYPE_CLASSES = (
    "BoolDType", "Int8DType", "Int16DType", "Int32DType", "Int64DType",
    "UInt8DType", "UInt16DType", "UInt32DType", "UInt64DType",
    "Float16DType", "Float32DType", "Float64DType",
)  # fmt: skip


def _extra_safe_globals() -> list:
    """The allow-list passed to torch.serialization.safe_globals."""
    allowed: list = [argparse.Namespace, np.dtype]
    # np.float64(...) pickles as a call to multiarray.scalar, under numpy.core (NumPy 1) or
    # numpy._core (NumPy 2); files written by either must load under the installed NumPy.
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed += [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)  # NumPy >= 1.25
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in _NUMPY_DTYPE_CLASSES if hasattr(dtypes, n)]
    return allowed


def _read(path, map_location):
    """torch.load under the allow-list; every failure becomes a one-line CheckpointError."""
    where = os.fspath(path)
    _check_is_torch_file(where)
    try:
        with torch.serialization.safe_globals(_extra_safe_globals()):
            return torch.load(where, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        rejected = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if rejected:
            raise CheckpointError(
                f"checkpoint {where} was rejected: it contains the Python object "
                f"{rejected.group(1)}, which is not on the allow-list of safe types "
                "(tensors, containers, argparse.Namespace, NumPy scalars); it was not unpickled"
            ) from None
        raise CheckpointError(f"checkpoint {where} is corrupt: {_describe(exc)}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {where}: {_describe(exc)}") from None
    except Exception as exc:  # torch raises assorted, often terse, types for damaged files
        raise CheckpointError(f"checkpoint {where} is corrupt: {_describe(exc)}") from None


def _check_is_torch_file(where: str) -> None:
    """Cheap up-front checks, so the common mistakes get a clear reason (torch's are terse)."""
    if not os.path.exists(where):
        raise CheckpointError(f"checkpoint {where} does not exist")
    if os.path.isdir(where):
        raise CheckpointError(f"checkpoint {where} is a directory, not a file")
    try:
        with open(where, "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {where}: {_describe(exc)}") from None
    if not head:
        raise CheckpointError(f"checkpoint {where} is empty")
    # torch.save writes a zip archive since PyTorch 1.6 and a protocol-2+ pickle before that.
    if head[:2] == b"PK":
        if not zipfile.is_zipfile(where):
            raise CheckpointError(
                f"checkpoint {where} is a damaged zip archive (truncated download?)"
            )
    elif head[:1] != b"\x80":
        raise CheckpointError(
            f"checkpoint {where} is not a torch file (neither a zip archive nor a pickle)"
        )


def _describe(exc: BaseException) -> str:
    """``Type: first line of the message``, skipping torch's weights-only advisory."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip()
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].strip()
    line = text.splitlines()[0].strip() if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _find_state_dict(obj, where: str) -> Mapping:
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        state = obj["model"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state = obj["state_dict"]
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        if not isinstance(obj, Mapping):
            found = f"a {type(obj).__name__}"
        elif not obj:
            found = "an empty dict"
        else:
            found = "keys " + ", ".join(repr(k) for k in list(obj)[:8])
        raise CheckpointError(
            f"no state dict found in checkpoint {where}: expected a dict with a 'model' or "
            f"'state_dict' entry or a bare state dict, found {found}"
        )
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"no state dict found in checkpoint {where}: entry {key!r} of the state dict "
                f"is a {type(value).__name__}, not a tensor"
            )
    if not state:
        raise CheckpointError(f"no state dict found in checkpoint {where}: the state dict is empty")
    return state


def _strip_data_parallel(state: Mapping) -> OrderedDict:
    """Drop a ``module.`` prefix present on every key, keeping torch's per-module version info."""
    strip = all(k.startswith(_DP_PREFIX) for k in state)
    cut = len(_DP_PREFIX) if strip else 0
    out = OrderedDict((k[cut:], v) for k, v in state.items())
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        if strip:
            # "module" becomes the root ""; the wrapper's own root entry is dropped.
            out._metadata = OrderedDict(
                ("" if k == "module" else k[cut:], v)
                for k, v in metadata.items()
                if k == "module" or k.startswith(_DP_PREFIX)
            )
        else:
            out._metadata = OrderedDict(metadata)
    return out


def load_state_dict_file(path, map_location="cpu") -> OrderedDict:
    """The state dict stored in ``path`` (published, ours, or bare), read safely."""
    where = os.fspath(path)
    return _strip_data_parallel(_find_state_dict(_read(path, map_location), where))


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(map(str, t.shape)) + ")" if t.dim() != 1 else f"({t.shape[0]},)"


def first_mismatch(model: nn.Module, state: Mapping) -> str | None:
    """Describe the first key that stops a strict load, or None if it would succeed.

    Model keys are checked in the model's order (missing or wrongly shaped), then the file's
    keys in the file's order (unexpected). ``num_batches_tracked`` may be absent from files
    written before PyTorch 0.4.1; torch's own loader fills it in, so it is not reported here.
    """
    return _first_mismatch_of(model.state_dict(), state)


def _first_mismatch_of(expected: Mapping, state: Mapping) -> str | None:
    """first_mismatch between two state dicts (``expected`` is the model's side)."""
    for key, tensor in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                continue
            return f"key {key!r} is missing from the file"
        if state[key].shape != tensor.shape:
            return (
                f"key {key!r} has shape {_shape(state[key])} in the file "
                f"but {_shape(tensor)} in the model"
            )
    for key in state:
        if key not in expected:
            return f"key {key!r} in the file is not in the model"
    return None


def load_weights(model: nn.Module, state: Mapping, *, source: str, model_name: str) -> nn.Module:
    """Strict ``load_state_dict`` whose failure names the first mismatching key in one line."""
    problem = first_mismatch(model, state)
    if problem is None:
        # strict=False plus our own check = strict=True with a one-line message; what torch
        # still reports here is a num_batches_tracked absent from a file that claims a new format
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys:
            problem = f"key {result.missing_keys[0]!r} is missing from the file"
        elif result.unexpected_keys:
            problem = f"key {result.unexpected_keys[0]!r} in the file is not in the model"
    if problem is not None:
        raise CheckpointError(f"checkpoint {source} does not fit {model_name}: {problem}")
    return model


def load_teacher(name: str, path, num_classes: int = 100, map_location="cpu", **options) -> nn.Module:
    """Build ``name``, load ``path`` strictly, and freeze it: eval mode, no gradients."""
    from .timm_zoo import adapt_checkpoint

    state = load_state_dict_file(path, map_location=map_location)
    model = build_model(name, num_classes=num_classes, **options)
    load_weights(model, adapt_checkpoint(name, state, model), source=os.fspath(path),
                 model_name=name)
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)  # the weights were read there; keep the buffers with them
    model.eval()
    model.requires_grad_(False)
    return model


def load_init_weights(model: nn.Module, path) -> int:
    """Start ``model`` from the weights in ``path`` (a fine-tune's pretrained weights, e.g.
    timm's ImageNet ViT-S): every tensor but the classifier's must be in the file with its shape
    (the classifier of another task, if the file has one, is dropped and ours keeps its fresh
    initialisation). Returns how many tensors were loaded; a mismatch is a one-line
    CheckpointError naming the first key."""
    from .classifier import classifier_keys

    where = os.fspath(path)
    head = classifier_keys(model)
    state = OrderedDict((k, v) for k, v in load_state_dict_file(path).items() if k not in head)
    body = OrderedDict((k, v) for k, v in model.state_dict().items() if k not in head)
    problem = _first_mismatch_of(body, state)
    if problem is not None:
        raise CheckpointError(f"initial weights {where}: {problem}")
    model.load_state_dict(state, strict=False)
    return len(state)
