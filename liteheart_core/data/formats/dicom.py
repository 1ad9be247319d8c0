"""DICOM waveforms: 12-lead ECG, General ECG and Ambulatory ECG objects, read with pydicom.

pydicom (maintained, pure Python) parses the file and decodes the multiplexed samples with each
channel's sensitivity, correction factor and baseline (``Dataset.waveform_array``); this module picks
the rhythm group, names the channels and checks units, rate and length:

* the group read is the first whose label is not a median or representative beat (a 12-lead ECG
  object also holds a 1.2-s median beat per lead);
* a channel's lead comes from its source code (SCPECG ``5.6.3-9-N`` or MDC ``2:N``), else from the
  code's meaning (``Lead I (Einthoven)``); its unit from ``ChannelSensitivityUnitsSequence`` (UCUM);
* the samples the group announces (channels x samples x bits) must all be in ``WaveformData``;
* patient id (``PatientID``), the recording's id (``SOPInstanceUID``) and coded statements from
  ``WaveformAnnotationSequence``: a concept code in the SCPECG scheme that is a statement (no
  measurement value) becomes ``SCP:<code>``, a SNOMED CT one (``SCT``) ``SNOMED:<code>``, SNOMED RT
  (``SRT``) and DICOM (``DCM``) ones ``SRT:``/``DCM:<code>`` (labelled where PTB-XL's statement table
  cross-references them, e.g. ``D3-31520`` atrial fibrillation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from liteheart_core.data.formats.common import assemble, coded_lead, lead_name
from liteheart_core.data.signal import RawRecord, RecordError

ECG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "General ECG",
    "1.2.840.10008.5.1.4.1.1.9.1.3": "Ambulatory ECG",
}
_BEAT_LABELS = ("MEDIAN", "REPRESENTATIVE", "BEAT")
_SNOMED_CT = {"SCT", "SNOMED"}  # SNOMED CT (numeric ids); SRT/SNM3 are SNOMED RT's older alphanumeric codes


def read(path: Path, rid: str, allow_single_lead: bool = False, reject_flat: bool = True) -> RawRecord:
    """Read the rhythm waveform of a DICOM ECG file.

    Raises
    ------
    RecordError
        Not a readable DICOM file, no ECG waveform, truncated or inconsistent waveform data, channels
        without a voltage unit, unknown rate, missing or duplicate leads, NaN samples.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)  # an image in the folder: no pixels read
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RecordError(rid, f"not a readable DICOM file: {type(exc).__name__}: {exc}") from None
    try:
        groups = list(ds.get("WaveformSequence") or [])
    except Exception as exc:  # a corrupt sequence is only parsed when first touched
        raise RecordError(rid, f"corrupt DICOM waveform sequence: {type(exc).__name__}: {exc}") from None
    if not groups:
        sop = str(ds.get("SOPClassUID", ""))
        raise RecordError(rid, f"DICOM file holds no waveform (SOP class {ECG_SOP_CLASSES.get(sop, sop or 'none')})")
    index = next(
        (
            i
            for i, g in enumerate(groups)
            if not any(b in str(g.get("MultiplexGroupLabel", "")).upper() for b in _BEAT_LABELS)
        ),
        None,
    )
    if index is None:
        raise RecordError(rid, "DICOM file holds only median/representative beats, no rhythm waveform")
    group = groups[index]
    try:
        n_ch = int(group.NumberOfWaveformChannels)
        n = int(group.NumberOfWaveformSamples)
        bits = int(group.WaveformBitsAllocated)
        raw_bytes = len(group.WaveformData)
    except (AttributeError, TypeError, ValueError) as exc:
        raise RecordError(rid, f"DICOM waveform group {index + 1} lacks channels/samples/bits/data: {exc}") from None
    channels = list(group.get("ChannelDefinitionSequence") or [])
    if n_ch < 1 or n < 1 or bits not in (8, 16, 32, 64) or len(channels) != n_ch:
        raise RecordError(
            rid,
            f"DICOM waveform group {index + 1}: {n_ch} channels, {n} samples, {bits} bits, "
            f"{len(channels)} channel definitions (inconsistent)",
        )
    need = n_ch * n * bits // 8
    if raw_bytes < need:
        raise RecordError(
            rid,
            f"truncated DICOM waveform: {n_ch} channels x {n} samples need {need} bytes, "
            f"WaveformData holds {raw_bytes}",
        )
    try:
        data = np.asarray(ds.waveform_array(index), dtype=np.float64)  # [samples, channels], sensitivity applied
    except Exception as exc:  # pydicom raises many types for inconsistent waveform attributes
        raise RecordError(rid, f"DICOM waveform cannot be decoded: {type(exc).__name__}: {exc}") from None
    names, units = [], []
    for ch in channels:
        names.append(_channel_lead(ch))
        unit_seq = ch.get("ChannelSensitivityUnitsSequence") or []
        units.append(str(unit_seq[0].get("CodeValue", "")) if unit_seq else None)
    return assemble(
        rid,
        names,
        [data[:, i] for i in range(n_ch)],
        units,
        group.get("SamplingFrequency"),
        fmt="dicom",
        where_fs="SamplingFrequency",
        allow_single_lead=allow_single_lead,
        reject_flat=reject_flat,
        patient=str(ds.get("PatientID", "") or ""),
        source_id=str(ds.get("SOPInstanceUID", "") or ""),
        codes=_statements(ds),
    )


def _channel_lead(channel) -> str | None:
    source = channel.get("ChannelSourceSequence") or []
    if not source:
        return lead_name(str(channel.get("ChannelLabel", "")))
    item = source[0]
    return (
        coded_lead(str(item.get("CodingSchemeDesignator", "")), str(item.get("CodeValue", "")))
        or lead_name(str(item.get("CodeMeaning", "")))
        or lead_name(str(channel.get("ChannelLabel", "")))
    )


def _statements(ds) -> tuple[str, ...]:
    """Coded statements of the waveform annotations (measurements, which carry a value, are left out)."""
    codes: list[str] = []
    for ann in ds.get("WaveformAnnotationSequence") or []:
        if "NumericValue" in ann:
            continue
        for concept in ann.get("ConceptNameCodeSequence") or []:
            scheme = str(concept.get("CodingSchemeDesignator", "")).upper()
            value = str(concept.get("CodeValue", "")).strip()
            if not value:
                continue
            if scheme.startswith("SCPECG"):
                codes.append(f"SCP:{value}")
            elif scheme in _SNOMED_CT:
                codes.append(f"SNOMED:{value}")
            elif scheme in ("SRT", "SNM3"):
                codes.append(f"SRT:{value}")
            elif scheme == "DCM":
                codes.append(f"DCM:{value}")
    return tuple(dict.fromkeys(codes))
