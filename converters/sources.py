"""Loading a trained model from any of the sources edgemed accepts (Polygraphy-style loaders).

TorchScript, torch.export programs (.pt2), state_dicts with a zoo ``--arch``, pickled
nn.Modules (only with ``--allow-pickle``: unpickling runs arbitrary code) and ONNX files.
The file's bytes, not its name, decide what it is.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemed.errors import ConversionError, first_line
from edgemed.hashing import sha256_file


@dataclass
class SourceModel:
    kind: str  # torchscript | torch.export | state_dict | pickle | onnx
    path: Path
    sha256: str
    module: Any = None  # a torch.nn.Module (or ScriptModule / ExportedProgram) for torch sources
    notes: list[str] = field(default_factory=list)

    @property
    def is_onnx(self) -> bool:
        return self.kind == "onnx"


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def _looks_like_onnx(path: Path) -> bool:
    if path.suffix.lower() == ".onnx":
        return True
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - any parse failure means "not ONNX"
        return False
    return bool(model.graph.node)


def detect(path: Path) -> str:
    names = _zip_names(path)
    if names:
        if any(n.endswith("archive_format") or "/serialized_exported_program" in n or n.startswith("models/")
               for n in names) and path.suffix.lower() == ".pt2":
            return "torch.export"
        if any(n.split("/", 1)[-1].startswith("code/") or n.endswith("constants.pkl") for n in names):
            return "torchscript"
        if path.suffix.lower() == ".pt2":
            return "torch.export"
        return "torch.save"
    if _looks_like_onnx(path):
        return "onnx"
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80":  # a legacy (non-zip) pickle
        return "torch.save"
    raise ConversionError(
        f"{path}: unknown model file type",
        "pass a TorchScript (.pt), torch.export (.pt2), state_dict checkpoint, or ONNX (.onnx) file",
    )


def load_source(path: str | Path, arch: str | None = None, arch_args: dict | None = None,
                allow_pickle: bool = False) -> SourceModel:
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such model file", "check the path")
    kind = detect(path)
    digest = sha256_file(path)
    if kind == "onnx":
        return SourceModel("onnx", path, digest)
    import torch

    if kind == "torchscript":
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001
            raise ConversionError(f"{path}: cannot load TorchScript ({first_line(exc)})",
                                  "re-save it with torch.jit.save") from exc
        return SourceModel("torchscript", path, digest, module.eval())
    if kind == "torch.export":
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # noqa: BLE001
            raise ConversionError(f"{path}: cannot load torch.export program ({first_line(exc)})",
                                  "re-save it with torch.export.save") from exc
        return SourceModel("torch.export", path, digest, program)

    # torch.save: a state_dict (safe, weights_only) or a pickled module (code execution).
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - weights_only refuses arbitrary classes with UnpicklingError
        if not allow_pickle:
            raise ConversionError(
                f"{path}: holds a pickled Python object, not just weights; unpickling runs arbitrary code",
                "pass --allow-pickle only if you trust its author, or save a state_dict and use --arch",
            ) from exc
        return SourceModel("pickle", path, digest, _unpickle_module(path), ["loaded with --allow-pickle"])

    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(f"{path}: not a state_dict of tensors", "save model.state_dict() or a whole model")
    if arch is None:
        from edgemed.zoo import ARCHITECTURES

        raise ConversionError(f"{path}: is a state_dict checkpoint (weights without an architecture)",
                              f"pass --arch NAME (one of {', '.join(ARCHITECTURES)}) and --arch-args JSON")
    from edgemed.zoo import build

    kwargs = dict(arch_args or {})
    module = build(arch, **kwargs)
    mismatch = _state_dict_mismatch(module.state_dict(), obj)
    if mismatch:
        raise ConversionError(f"{path}: weights do not fit --arch {arch} {json.dumps(kwargs)}: {mismatch}",
                              "check --arch-args (e.g. base, num_classes) match the training run")
    module.load_state_dict(obj, strict=True)
    return SourceModel("state_dict", path, digest, module.eval(), [f"arch {arch} {json.dumps(kwargs)}"])


def _state_dict_mismatch(want: dict, got: dict, show: int = 3) -> str:
    """What differs between a model's parameters and a checkpoint, in one line ('' when they fit)."""
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    shapes = [f"{k} checkpoint {list(got[k].shape)} vs model {list(want[k].shape)}" for k in want
              if k in got and tuple(got[k].shape) != tuple(want[k].shape)]

    def part(label: str, items: list[str]) -> str:
        more = f" and {len(items) - show} more" if len(items) > show else ""
        return f"{len(items)} {label} ({', '.join(items[:show])}{more})"

    parts = [part(label, items) for label, items in (("with other shapes", shapes), ("missing", missing),
                                                     ("unexpected", unexpected)) if items]
    return "; ".join(parts)


def _unpickle_module(path: Path) -> Any:
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"{path}: cannot unpickle ({first_line(exc)})",
                              "make the model's class importable here, or export TorchScript") from exc
    if not isinstance(obj, torch.nn.Module):
        raise ConversionError(f"{path}: unpickled a {type(obj).__name__}, not an nn.Module",
                              "save the model itself, or a state_dict with --arch")
    return obj.eval()

