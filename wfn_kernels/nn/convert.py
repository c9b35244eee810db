"""``convert()``: swap ``nn.Linear`` / ``nn.Conv2d`` for packed WFN modules, with a report; model helpers."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..format.codebook import DEFAULT_MAX_TERMS, Codebook
from .modules import COMPUTE_MODES, ComputeModeError, WFNConv2d, WFNLinear, _WFNBase


@dataclass
class ConversionReport:
    """What ``convert`` did: converted layers (name, kind, bits, codebook size), skipped ones with the
    reason, and the whole-network codebook used."""

    codebook: Codebook | None
    converted: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"converted {len(self.converted)} layer(s), skipped {len(self.skipped)}; whole-network "
                 f"codebook: {len(self.codebook) if self.codebook is not None else 0} values"]
        lines += [f"  + {c['name']}: {c['kind']} {c['bits']}-bit, {c['codebook_size']} values"
                  + (f", compute {c['compute']}" if "compute" in c else "")
                  + (f" ({c['compute_note']})" if c.get("compute_note") else "") for c in self.converted]
        lines += [f"  = {c['name']} is also registered as {', '.join(c['aliases'])} (one shared module)"
                  for c in self.converted if c.get("aliases")]
        lines += [f"  - {name}: {why}" for name, why in self.skipped]
        from ..ops.backends import cpu_compute_note

        for mode in sorted({c.get("compute") for c in self.converted} & {"int8", "bf16"}):
            note = cpu_compute_note(mode)
            if note:
                lines.append(f"  note: compute {mode} on this CPU: {note}")
        return "\n".join(lines)


# Layer types with weights that convert() does not pack: listed in the report's ``skipped`` with the reason.
_UNHANDLED = (nn.Linear, nn.modules.conv._ConvNd, nn.Bilinear, nn.Embedding, nn.EmbeddingBag,
              nn.modules.rnn.RNNBase, nn.MultiheadAttention)


def _aliases(model: nn.Module) -> dict[int, list[str]]:
    """{id(module): every name it is registered under}: a module shared by two attributes has two."""
    names: dict[int, list[str]] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        names.setdefault(id(m), []).append(n)
    return names


def _candidates(model: nn.Module, filter_fn) -> tuple[list[tuple[str, nn.Module]], list[tuple[str, str]]]:
    chosen, skipped = [], []
    for name, mod in model.named_modules():  # a shared module once, under its first name
        if type(mod) not in (nn.Linear, nn.Conv2d):
            if isinstance(mod, _UNHANDLED):
                skipped.append((name, f"{type(mod).__name__} is not converted: convert() packs nn.Linear and "
                                      "nn.Conv2d exactly (not subclasses or other layer types); its float "
                                      "weights stay"))
            continue
        if filter_fn is not None and not filter_fn(mod, name):
            skipped.append((name, "excluded by filter_fn"))
        elif isinstance(mod, nn.Conv2d) and (mod.padding_mode != "zeros" or isinstance(mod.padding, str)):
            skipped.append((name, f"unsupported padding ({mod.padding_mode!r}, {mod.padding!r})"))
        else:
            chosen.append((name, mod))
    return chosen, skipped


def _collect_codebook(chosen, max_terms: int, skipped: list) -> tuple[Codebook | None, list]:
    """Whole-network codebook from the unique weight values of every eligible layer."""
    eligible, values = [], []
    for name, mod in chosen:
        uniq = torch.unique(mod.weight.detach().float().cpu())
        if uniq.numel() > 256:
            skipped.append((name, f"{uniq.numel()} unique weight values (at most 256 fit 8-bit codes)"))
            continue
        try:
            Codebook(uniq, max_terms=max_terms)
        except ValueError as exc:
            skipped.append((name, f"weights are not on a power-of-two codebook: {exc}"))
            continue
        eligible.append((name, mod))
        values.append(uniq)
    if not eligible:
        return None, []
    return Codebook(torch.unique(torch.cat(values)), max_terms=max_terms, max_entries=None), eligible


def convert(model: nn.Module, filter_fn=None, codebook: Codebook | None = None, *, strict: bool | None = None,
            max_terms: int = DEFAULT_MAX_TERMS, backend: str = "auto", shift_add: bool = False,
            compute: str | None = None) -> ConversionReport:
    """Swap (in place) every ``nn.Linear`` / ``nn.Conv2d`` whose weights lie on a codebook.

    ``filter_fn(module, name) -> bool`` selects layers. With ``codebook=None`` the whole-network codebook
    is collected from the model's unique values, and layers that cannot be packed are skipped with the
    reason. With an explicit ``codebook`` (``strict`` defaults to True) a selected layer whose weights are
    off the codebook raises ValueError naming the layer, how many weights are off and by how much; with
    ``strict=False`` it is skipped instead. ``compute`` ("float" default, "bf16", "int8"; see
    :class:`~wfn_kernels.nn.modules._WFNBase`) sets every converted layer's arithmetic; ``shift_add=True``
    means ``compute="int8"``. A layer that cannot honour the mode raises ValueError naming it and why,
    unless ``strict=False``: then it stays "float" and its report entry says why
    (``converted[i]["compute"]`` / ``["compute_note"]``). Returns a :class:`ConversionReport`.
    """
    compute = _resolve_compute(compute, shift_add)
    compute_strict = strict is not False
    strict = codebook is not None if strict is None else strict
    chosen, skipped = _candidates(model, filter_fn)
    if codebook is None:
        codebook, chosen = _collect_codebook(chosen, max_terms, skipped)
    report = ConversionReport(codebook, skipped=skipped)
    names = _aliases(model)
    for name, mod in chosen:
        try:
            new, entry = convert_module(mod, codebook, name, backend=backend, compute=compute,
                                        strict=compute_strict)
        except ComputeModeError:
            raise  # a mode refusal is never a packing skip
        except ValueError as exc:
            if strict:
                raise
            report.skipped.append((name, str(exc)))
            continue
        for alias in names[id(mod)]:  # a module registered under several names: one WFN module at each
            set_submodule(model, alias, new)
        if len(names[id(mod)]) > 1:
            entry["aliases"] = [a for a in names[id(mod)] if a != name]
        report.converted.append(entry)
    return report


def _resolve_compute(compute: str | None, shift_add: bool) -> str:
    if compute is None:
        return "int8" if shift_add else "float"
    if shift_add and compute != "int8":
        raise ValueError(f"shift_add=True means compute='int8'; it conflicts with compute={compute!r}")
    if compute not in COMPUTE_MODES:
        raise ValueError(f"unknown compute mode {compute!r}; choose one of {list(COMPUTE_MODES)}")
    return compute


def convert_module(mod: nn.Module, codebook: Codebook, name: str = "layer", *, backend: str = "auto",
                   shift_add: bool = False, compute: str | None = None,
                   strict: bool = True) -> tuple[nn.Module, dict]:
    """One ``nn.Linear`` / ``nn.Conv2d`` packed onto ``codebook``: (the WFN module on ``mod``'s device, its
    report entry). Raises ValueError naming ``name`` when the layer cannot be packed, or cannot run
    ``compute`` (``shift_add=True``: "int8") and ``strict`` is True; with ``strict=False`` it stays "float"
    and the entry's ``compute_note`` says why."""
    compute = _resolve_compute(compute, shift_add)
    if isinstance(mod, nn.Linear):
        new = WFNLinear.from_linear(mod, codebook, name, backend)
    elif isinstance(mod, nn.Conv2d):
        new = WFNConv2d.from_conv(mod, codebook, name, backend)
    else:
        raise ValueError(f"{name}: {type(mod).__name__} is not an nn.Linear or nn.Conv2d")
    entry = {"name": name, "kind": type(mod).__name__, "bits": new.bits, "codebook_size": int(new.codebook.numel()),
             "compute": "float"}
    if compute != "float":
        why = new.compute_unavailable_reason(compute)
        if why and strict:
            raise ComputeModeError(f"{name}: cannot use compute={compute!r}: {why}")
        if why:
            entry["compute_note"] = f"stays float: {compute} impossible: {why}"
        else:
            new.set_compute(compute)
            entry["compute"] = compute
    return new.to(mod.weight.device), entry


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    if name == "":
        raise ValueError("convert: the model itself is a Linear/Conv2d; wrap it in a container module")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def wfn_modules(model: nn.Module) -> list[tuple[str, _WFNBase]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _WFNBase)]


def weight_bytes(model: nn.Module) -> dict[str, int]:
    """Weight memory of the model: packed WFN layers vs fp32, plus float parameters left as they are."""
    packed = dense = 0
    for _, m in wfn_modules(model):
        wb = m.weight_bytes()
        packed += wb["packed_bytes"]
        dense += wb["fp32_bytes"]
    other = sum(p.numel() * p.element_size() for p in model.parameters())
    other += sum(m.bias.numel() * 4 for _, m in wfn_modules(model) if m.bias is not None)
    return {"packed_bytes": packed, "fp32_bytes": dense, "other_float_bytes": other}


def set_compute(model: nn.Module, compute: str, *, strict: bool = True) -> list[tuple[str, str]]:
    """Set the compute mode ("float", "bf16", "int8") of every WFN module in ``model``.

    Every layer is checked first: with ``strict`` (default) a layer that cannot honour the mode raises
    ValueError naming it and why, and no layer changes; with ``strict=False`` such layers are set to
    "float" and returned as ``[(name, reason)]``."""
    if compute not in COMPUTE_MODES:
        raise ValueError(f"unknown compute mode {compute!r}; choose one of {list(COMPUTE_MODES)}")
    mods = wfn_modules(model)
    refused = [(n, why) for n, m in mods if (why := m.compute_unavailable_reason(compute))]
    if refused and strict:
        name, why = refused[0]
        more = f" (and {len(refused) - 1} more layer(s))" if len(refused) > 1 else ""
        raise ComputeModeError(f"{name}: cannot use compute={compute!r}: {why}{more}")
    names = {n for n, _ in refused}
    for n, m in mods:
        m.set_compute("float" if n in names else compute)
    return refused


def set_backend(model: nn.Module, backend: str) -> None:
    """Set the kernel backend of every WFN module in ``model``."""
    for _, m in wfn_modules(model):
        m.set_backend(backend)
