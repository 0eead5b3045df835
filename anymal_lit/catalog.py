"""``anymal-lit list``: every encoder, projector, stage, data module, callback and YAML preset, with arguments."""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning.pytorch as L

import anymal_lit.callbacks
import anymal_lit.data
import anymal_lit.encoders
import anymal_lit.projectors
import anymal_lit.stages
from anymal_lit.data.datamodule import ConversationDataModule
from anymal_lit.encoders.base import ModalityEncoder
from anymal_lit.projectors.base import Projector
from anymal_lit.stages.base import AnyMALStage

KINDS = {
    "encoders": (ModalityEncoder, anymal_lit.encoders),
    "projectors": (Projector, anymal_lit.projectors),
    "stages": (AnyMALStage, anymal_lit.stages),
    "data": (ConversationDataModule, anymal_lit.data),
    "callbacks": (L.Callback, anymal_lit.callbacks),
}


def _subclasses(base: type) -> list[type]:
    found, todo = [], [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if not inspect.isabstract(sub) and sub.__module__.startswith("anymal_lit"):
                found.append(sub)
    return sorted(set(found), key=lambda c: c.__name__)


def components(kind: str) -> list[type]:
    """Concrete classes of one kind: every imported subclass of its base (so a new subclass is listed as is)."""
    base, _ = KINDS[kind]
    return _subclasses(base)


def describe(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    summary = doc.split("\n\n")[0].replace("\n", " ")
    lines = [f"  {cls.__name__}  ({cls.__module__}.{cls.__qualname__})", f"      {summary}"]
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "args", "kwargs"):
            continue
        default = "" if param.default is inspect.Parameter.empty else f" = {param.default!r}"
        annotation = (
            param.annotation if isinstance(param.annotation, str) else getattr(param.annotation, "__name__", "")
        )
        lines.append(f"      {name}: {annotation}{default}")
    return "\n".join(lines)


def render(conf_dir: str | Path = "conf") -> str:
    """The whole catalog as text."""
    out = []
    for kind in KINDS:
        out.append(f"{kind}:")
        out += [describe(cls) for cls in components(kind)]
    conf_dir = Path(conf_dir)
    out.append(f"presets ({conf_dir}/):")
    presets = sorted(conf_dir.rglob("*.yaml")) if conf_dir.is_dir() else []
    out += [f"  {p.relative_to(conf_dir)}" for p in presets] or ["  (none found; run from the repository root)"]
    return "\n".join(out)
