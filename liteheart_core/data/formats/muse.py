"""GE MUSE resting-ECG XML (``RestingECG``): plain XML with base64 little-endian 16-bit samples per lead.

No maintained Python library reads it, and none is needed: the schema is flat. Read through defusedxml:

* the ``Waveform`` whose ``WaveformType`` is ``Rhythm`` (a MUSE file also holds ``Median`` beats);
* rate ``SampleBase * 10**SampleExponent``; each ``LeadData``: ``LeadID``, samples from ``WaveFormData``
  times ``LeadAmplitudeUnitsPerBit`` in ``LeadAmplitudeUnits`` (``MICROVOLTS``); the decoded byte and
  sample counts must match ``LeadByteCountTotal`` and ``LeadSampleCountTotal`` where the file states them;
* MUSE stores 8 leads (I, II, V1-V6): III, aVR, aVL and aVF are derived, as MUSE itself does;
* patient id from ``PatientDemographics/PatientID``, the recording's id from the acquisition date and
  time. MUSE's diagnosis statements are free text (``StmtText``), not codes: they give no label.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import numpy as np

from liteheart_core.data.formats import xmlutil as xu
from liteheart_core.data.formats.common import assemble, lead_name, number, whole
from liteheart_core.data.signal import RawRecord, RecordError


def read(path: Path, rid: str, allow_single_lead: bool = False, reject_flat: bool = True) -> RawRecord:
    """Read the rhythm waveform of a GE MUSE XML file.

    Raises
    ------
    RecordError
        Not well-formed XML, no rhythm waveform, bad base64, sample or byte counts other than declared,
        an unknown rate or unit, missing or duplicate leads, NaN samples.
    """
    root = xu.parse(path, rid, "GE MUSE")
    waves = list(xu.children(root, "Waveform"))
    rhythm = next((w for w in waves if xu.text(w, "WaveformType").lower() == "rhythm"), None)
    if rhythm is None:
        raise RecordError(rid, f"MUSE file holds no Rhythm waveform ({len(waves)} other waveforms)")
    base, exponent = xu.text(rhythm, "SampleBase"), xu.text(rhythm, "SampleExponent") or "0"
    try:
        fs: object = float(base) * 10.0 ** int(exponent)
    except (ValueError, OverflowError):
        fs = f"{base!r} x 10^{exponent!r}"
    names, channels, units = [], [], []
    for lead in xu.children(rhythm, "LeadData"):
        name = lead_name(xu.text(lead, "LeadID"))
        if name is None:
            continue
        try:
            blob = base64.b64decode(xu.text(lead, "WaveFormData"), validate=False)
        except (binascii.Error, ValueError) as exc:
            raise RecordError(rid, f"lead {name}: WaveFormData is not base64: {exc}") from None
        declared_bytes = xu.text(lead, "LeadByteCountTotal")
        if declared_bytes and whole(rid, declared_bytes, f"lead {name} LeadByteCountTotal") != len(blob):
            raise RecordError(
                rid, f"lead {name}: {len(blob)} bytes of samples, LeadByteCountTotal says {declared_bytes}"
            )
        if len(blob) % 2:
            raise RecordError(rid, f"lead {name}: {len(blob)} bytes is no whole number of 16-bit samples")
        samples = np.frombuffer(blob, dtype="<i2").astype(np.float64)
        declared = xu.text(lead, "LeadSampleCountTotal")
        if declared and whole(rid, declared, f"lead {name} LeadSampleCountTotal") != samples.size:
            raise RecordError(rid, f"lead {name}: {samples.size} samples, LeadSampleCountTotal says {declared}")
        gain = number(rid, xu.text(lead, "LeadAmplitudeUnitsPerBit") or "nan", f"lead {name} LeadAmplitudeUnitsPerBit")
        names.append(name)
        channels.append(samples * gain)
        units.append(xu.text(lead, "LeadAmplitudeUnits") or None)
    demo = xu.child(root, "TestDemographics")
    when = " ".join(t for t in (xu.text(demo, "AcquisitionDate"), xu.text(demo, "AcquisitionTime")) if t)
    return assemble(
        rid,
        names,
        channels,
        units,
        fs,
        fmt="muse",
        where_fs="SampleBase/SampleExponent",
        allow_single_lead=allow_single_lead,
        reject_flat=reject_flat,
        patient=xu.text(root, "PatientDemographics", "PatientID"),
        source_id=when,
    )
