"""HL7 v3 annotated ECG (aECG, the FDA's submission format), read from its XML.

No maintained Python library reads aECG (the ``aecg`` package on PyPI has no installable release), so
this module reads the XML itself, through defusedxml so that a hostile file cannot expand entities:

* the rhythm ``series`` (code ``RHYTHM``; else the first series), its ``sequenceSet``: the time
  sequence's ``increment`` (``value`` in ``s`` or ``ms``) gives the rate, each lead sequence
  (``MDC_ECG_LEAD_*``) holds ``SLIST_PQ`` values ``origin + scale * digits`` in the scale's unit;
* the record id from the root ``id`` (``root``/``extension``), the patient from the subject's
  ``trialSubject/id``;
* coded statements from ``annotation/code`` whose code system is SNOMED CT (OID 2.16.840.1.113883.6.96 or
  name ``SNOMED``) -> ``SNOMED:<code>``, SCP-ECG (name ``SCPECG``/``SCP-ECG``) -> ``SCP:<code>``, and the
  MDC rhythm and beat codes (``MDC_ECG_RHY_ATR_FIB``) -> ``MDC:<code>``, labelled where PTB-XL's
  statement table cross-references them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from liteheart_core.data.formats import xmlutil as xu
from liteheart_core.data.formats.common import assemble, lead_name, number
from liteheart_core.data.signal import RawRecord, RecordError

SNOMED_OID = "2.16.840.1.113883.6.96"
_TIME_CODES = ("TIME_ABSOLUTE", "TIME_RELATIVE")


def read(path: Path, rid: str, allow_single_lead: bool = False, reject_flat: bool = True) -> RawRecord:
    """Read the rhythm waveform of an HL7 aECG file.

    Raises
    ------
    RecordError
        Not well-formed XML, no series or time sequence, a rate that cannot be established, digits that are
        not numbers, leads without a voltage unit, missing or duplicate leads, NaN samples.
    """
    root = xu.parse(path, rid, "HL7 aECG")
    series = list(xu.find_all(root, "series"))
    if not series:
        raise RecordError(rid, "aECG file holds no waveform series")
    chosen = next((s for s in series if xu.attr(xu.child(s, "code"), "code").upper() == "RHYTHM"), series[0])
    # series/component/sequenceSet/component/sequence: not deeper, where a derivedSeries holds median beats
    sequences = [
        seq
        for comp in xu.children(chosen, "component")
        for seq_set in xu.children(comp, "sequenceSet")
        for inner in xu.children(seq_set, "component")
        for seq in xu.children(inner, "sequence")
    ]
    fs, where = None, "the time sequence"
    names, channels, units = [], [], []
    for seq in sequences:
        code = xu.attr(xu.child(seq, "code"), "code")
        value = xu.child(seq, "value")
        if code.upper() in _TIME_CODES:
            fs, where = _rate(rid, value)
            continue
        lead = lead_name(code)
        if lead is None or value is None:
            continue
        origin, scale = xu.child(value, "origin"), xu.child(value, "scale")
        digits = xu.text(value, "digits")
        try:
            samples = np.array(digits.split(), dtype=np.float64)
        except ValueError:
            raise RecordError(rid, f"lead {lead}: digits are not all numbers") from None
        off = number(rid, xu.attr(origin, "value") or "0", f"lead {lead} origin")
        gain = number(rid, xu.attr(scale, "value") or "1", f"lead {lead} scale")
        names.append(lead)
        channels.append(off + gain * samples)
        units.append(xu.attr(scale, "unit") or xu.attr(origin, "unit") or None)
    if fs is None:
        raise RecordError(rid, "unknown sampling rate: the aECG series has no time sequence with an increment")
    return assemble(
        rid,
        names,
        channels,
        units,
        fs,
        fmt="aecg",
        where_fs=where,
        allow_single_lead=allow_single_lead,
        reject_flat=reject_flat,
        patient=_patient(root),
        source_id=_record_id(root),
        codes=_statements(root),
    )


def _rate(rid: str, value) -> tuple[float | str, str]:
    inc = xu.child(value, "increment") if value is not None else None
    if inc is None:
        return "none", "the time sequence (no increment)"
    unit = xu.attr(inc, "unit").strip()
    scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6}.get(unit)
    raw = xu.attr(inc, "value")
    if scale is None:
        return f"{raw} {unit}", f"the increment's unit {unit!r} (s or ms expected)"
    step = number(rid, raw, "the time increment") * scale
    return (1.0 / step if step > 0 else raw), f"the increment {raw} {unit}"


def _record_id(root) -> str:
    node = xu.child(root, "id")
    return xu.attr(node, "extension") or xu.attr(node, "root")


def _patient(root) -> str:
    subject = next(xu.find_all(root, "trialSubject"), None)
    node = xu.child(subject, "id") if subject is not None else None
    return xu.attr(node, "extension") or xu.attr(node, "root")


def _statements(root) -> tuple[str, ...]:
    codes: list[str] = []
    for ann in xu.find_all(root, "annotation"):
        code = xu.child(ann, "code")
        value = xu.attr(code, "code").strip()
        system, name = xu.attr(code, "codeSystem"), xu.attr(code, "codeSystemName").upper().replace("-", "")
        if not value:
            continue
        if system == SNOMED_OID or name.startswith("SNOMED"):
            codes.append(f"SNOMED:{value}")
        elif name == "SCPECG":
            codes.append(f"SCP:{value}")
        elif value.startswith(("MDC_ECG_RHY_", "MDC_ECG_BEAT_")):  # ISO/IEEE 11073 rhythm and beat codes
            codes.append(f"MDC:{value}")
    return tuple(dict.fromkeys(codes))
