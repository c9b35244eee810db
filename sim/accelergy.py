"""Accelergy interop: an energy reference table (ERT) as an energy table, and action counts out.

Accelergy (Wu, Emer, Sze, ICCAD 2019; http://accelergy.mit.edu) prices each action of each component
from an ERT, ``ERT: {version, tables}``, written in two layouts:

- v0.3: ``tables`` is a list of ``{name: COMPONENT, actions: [{name: ACTION, arguments: MAP|null,
  energy: NUMBER}, ...]}``;
- v0.2: ``tables`` maps ``COMPONENT`` to ``{ACTION: {arguments, energy}`` or a list of them``}``.

A *binding* file maps this simulator's events onto ERT entries and so becomes an energy table::

    name: my_accelerator
    unit: pJ
    accelergy_ert: ERT.yaml          # path relative to this file
    bind:                            # event -> component, action [, arguments] [, bits]
      int8_mult: {component: system.PE.mac, action: multiply}
      rf_per_bit: {component: system.PE.regfile, action: read, bits: 16}
      ifmap_sram_read_per_bit: {component: system.ifmap_sram, action: read, bits: 64}
      ifmap_sram_write_per_bit: {component: system.ifmap_sram, action: write, bits: 64}
      dram_read_per_bit: {component: system.DRAM, action: read, bits: 64}
    events:                          # optional entries in the project's own format
      int24_add: {energy: 0.077, source: "..."}

``*_per_bit`` events divide the action's energy by ``bits`` (the bits one action moves); the others
take the energy per action. Action counts of per-bit events are bits moved / ``bits``, fractional when
a tensor's traffic is not a whole number of actions. Components match by full name or by the last dotted part(s), with index
ranges such as ``PE[0..167]`` ignored. An action with several argument sets needs ``arguments``.

:func:`write_action_counts` writes each design's totals as an Accelergy v0.3 ``action_counts`` file,
one entry per bound event (unbound events get the component ``<arch>.<event>``), so the same run can be
priced by Accelergy itself.
"""

from __future__ import annotations

import re
from pathlib import Path

from .arch import ArchConfig, load_yaml

_RANGE = re.compile(r"\[[^\]]*\]")


def read_ert(path_or_data) -> dict:
    """{component: {action: [(arguments or {}, energy), ...]}} from an ERT file (or its parsed YAML)."""
    if isinstance(path_or_data, (str, Path)):
        with open(path_or_data) as f:
            data = load_yaml(f)
        where = str(path_or_data)
    else:
        data, where = path_or_data, "ERT"
    if not isinstance(data, dict) or not isinstance(data.get("ERT"), dict) or "tables" not in data["ERT"]:
        raise ValueError(f"{where}: an Accelergy ERT is a mapping 'ERT: {{version, tables}}'")
    tables = data["ERT"]["tables"]
    out: dict = {}
    if isinstance(tables, list):  # v0.3
        for entry in tables:
            if not isinstance(entry, dict) or "name" not in entry or not isinstance(entry.get("actions"), list):
                raise ValueError(f"{where}: each v0.3 table needs 'name' and a list of 'actions', got {entry!r}")
            comp = out.setdefault(str(entry["name"]), {})
            for action in entry["actions"]:
                _add_action(comp, action.get("name"), action, where, entry["name"])
    elif isinstance(tables, dict):  # v0.2
        for name, actions in tables.items():
            if not isinstance(actions, dict):
                raise ValueError(f"{where}: v0.2 table {name!r} must map actions to energies")
            comp = out.setdefault(str(name), {})
            for action, entries in actions.items():
                for entry in entries if isinstance(entries, list) else [entries]:
                    _add_action(comp, action, entry, where, name)
    else:
        raise ValueError(f"{where}: ERT 'tables' must be a list (v0.3) or a mapping (v0.2)")
    return out


def _add_action(comp: dict, action, entry, where, component) -> None:
    if not action or not isinstance(entry, dict) or "energy" not in entry:
        raise ValueError(f"{where}: component {component!r}: each action needs a name and an energy, got {entry!r}")
    energy = entry["energy"]
    if isinstance(energy, bool) or not isinstance(energy, (int, float)) or energy < 0:
        raise ValueError(f"{where}: {component}.{action}: energy must be a number >= 0, got {energy!r}")
    comp.setdefault(str(action), []).append((dict(entry.get("arguments") or {}), float(energy)))


def _find_component(ert: dict, name: str, where: str) -> str:
    if name in ert:
        return name
    want = _RANGE.sub("", name)
    hits = [c for c in ert if _RANGE.sub("", c) == want or _RANGE.sub("", c).endswith("." + want)]
    if len(hits) != 1:
        found = "several: " + ", ".join(hits) if hits else "none"
        raise ValueError(f"{where}: component {name!r} must name exactly one ERT component ({found}); "
                         f"components are {sorted(ert)}")
    return hits[0]


def ert_energy(ert: dict, component: str, action: str, arguments=None, where: str = "ERT") -> tuple[str, dict, float]:
    """(full component name, the entry's arguments, energy of one ``action``) from a :func:`read_ert` table."""
    full = _find_component(ert, component, where)
    entries = ert[full].get(action)
    if not entries:
        raise ValueError(f"{where}: component {full!r} has no action {action!r}; it has {sorted(ert[full])}")
    if arguments is not None:
        entries = [e for e in entries if e[0] == dict(arguments)]
        if not entries:
            raise ValueError(f"{where}: {full}.{action} has no entry with arguments {dict(arguments)}")
    if len(entries) > 1:
        raise ValueError(f"{where}: {full}.{action} has {len(entries)} argument sets "
                         f"{[e[0] for e in entries]}; name one with 'arguments'")
    return full, entries[0][0], entries[0][1]


def binding_entries(data: dict, path) -> tuple[dict, dict, tuple, tuple]:
    """(events, sources, SRAM points, binding) of an :class:`~wfn_sim.energy.EnergyTable` from a binding
    file's parsed YAML (see the module docstring)."""
    where = str(path)
    for key in ("name", "unit", "bind"):
        if key not in data:
            raise ValueError(f"{where}: an Accelergy binding needs {key!r} (expects name, unit, accelergy_ert, bind)")
    if "accelergy_ert" in data:
        ert_path = Path(path).parent / str(data["accelergy_ert"])
        if not ert_path.exists():
            raise FileNotFoundError(f"{where}: accelergy_ert {str(ert_path)!r}: no such file")
        ert, ert_name = read_ert(ert_path), ert_path.name
    else:
        ert, ert_name = read_ert({"ERT": data["ERT"]}), where
    if not isinstance(data["bind"], dict) or not data["bind"]:
        raise ValueError(f"{where}: 'bind' must map events to {{component, action[, arguments][, bits]}}")
    events, sources, binding = {}, {}, {}
    for event, spec in data["bind"].items():
        if not isinstance(spec, dict) or not {"component", "action"} <= set(spec):
            raise ValueError(f"{where}: bind.{event} must be {{component, action[, arguments][, bits]}}, got {spec!r}")
        per_bit = str(event).endswith("_per_bit")
        bits = spec.get("bits")
        if per_bit and (isinstance(bits, bool) or not isinstance(bits, int) or bits <= 0):
            raise ValueError(f"{where}: bind.{event} is priced per bit: give 'bits', the bits one "
                             f"{spec['action']!r} moves (a positive integer), got {bits!r}")
        if not per_bit and bits is not None:
            raise ValueError(f"{where}: bind.{event} is priced per action; 'bits' applies to *_per_bit events only")
        full, args, energy = ert_energy(ert, str(spec["component"]), str(spec["action"]), spec.get("arguments"),
                                        where)
        events[event] = energy / bits if per_bit else energy
        sources[event] = f"Accelergy ERT {ert_name}: {full}.{spec['action']}" + (f" / {bits} b" if per_bit else "")
        binding[event] = (full, str(spec["action"]), args or None, bits or 1)
    for event, entry in (data.get("events") or {}).items():
        if event in events:
            raise ValueError(f"{where}: event {event!r} is both bound to the ERT and given in 'events'")
        if not isinstance(entry, dict) or "energy" not in entry or "source" not in entry:
            raise ValueError(f"{where}: event {event!r} must be {{energy: NUMBER, source: TEXT}}, got {entry!r}")
        events[event], sources[event] = entry["energy"], entry["source"]
    points = []
    for entry in data.get("sram_read_64b") or []:
        if not isinstance(entry, dict) or not {"kb", "energy", "source"} <= set(entry):
            raise ValueError(f"{where}: sram_read_64b entries must be {{kb, energy, source}}, got {entry!r}")
        points.append((float(entry["kb"]), float(entry["energy"])))
    return events, sources, tuple(points), tuple(sorted(binding.items()))


def action_counts(total: dict, arch: ArchConfig, table, product: str, add: str) -> list[tuple]:
    """[(component, action, arguments, count)] of one design's totals under ``table``'s events;
    ``product`` / ``add`` are the design's product and accumulate events (e.g. int8_mult, int24_add)."""
    binding = dict(table.binding or ())
    per_event = {
        product: total["multiplies"] if product.endswith("_mult") else total["shifts"],
        add: total["adds"],
        "codebook_read": total["codebook_reads"],
        "rf_per_bit": total["rf_read_bits"],
        "array_hop_per_bit": total["array_hop_bits"],
    }
    for tensor in ("ifmap", "filter", "ofmap"):
        for rw in ("read", "write"):
            per_event[f"{tensor}_sram_{rw}_per_bit"] = total[f"{tensor}_sram_{rw}_bits"]
    dram_read = total["ifmap_dram_read_bits"] + total["filter_dram_read_bits"]
    if "dram_read_per_bit" in table.events or "dram_write_per_bit" in table.events:
        per_event["dram_read_per_bit"] = dram_read
        per_event["dram_write_per_bit"] = total["ofmap_dram_write_bits"]
    else:
        per_event["dram_per_bit"] = dram_read + total["ofmap_dram_write_bits"]
    out = []
    for event, count in per_event.items():
        if event in binding:
            component, action, arguments, bits = binding[event]
        else:
            component, action, arguments, bits = f"{arch.name}.{event}", _default_action(event), None, 1
        value = count / bits
        out.append((component, action, arguments, int(value) if float(value).is_integer() else value))
    return out


def _default_action(event: str) -> str:
    for word in ("mult", "add", "shift", "read", "write", "hop"):
        if word in event:
            return {"mult": "multiply", "hop": "transfer"}.get(word, word)
    return "access"


def write_action_counts(result, out_dir, table, required_events) -> list[Path]:
    """Write ``action_counts_<design>.yaml`` (Accelergy v0.3) for each design of a SimResult;
    ``required_events(arch, design)`` names the design's events (:func:`wfn_sim.energy.required_events`)."""
    import yaml  # pyyaml: present whenever a table was read from YAML

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for design in result.designs:
        local: dict = {}
        product, add = required_events(result.arch, design)[:2]
        for component, action, arguments, count in action_counts(result.totals[design], result.arch, table,
                                                                 product, add):
            entry = {"name": action, "counts": count}
            if arguments:
                entry["arguments"] = dict(arguments)
            local.setdefault(component, []).append(entry)
        doc = {"action_counts": {"version": 0.3,
                                 "local": [{"name": c, "action_counts": a} for c, a in local.items()]}}
        path = out_dir / f"action_counts_{design}.yaml"
        header = (f"# wfn-sim action counts: workload {result.workload}, design {design}, arch {result.arch.name}, "
                  f"priced with energy table {result.table_name} ({result.table_unit})\n")
        path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
        paths.append(path)
    return paths
