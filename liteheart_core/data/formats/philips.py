"""Philips SierraECG / PhilipsECG XML (``restingecgdata``), read with sierraecg.

sierraecg decodes the XLI-compressed waveforms (LZW + second differences) and rebuilds the limb leads
III, aVR, aVL, aVF from their stored residuals, which no one should write again by hand. It does not
return the amplitude resolution, which this module reads from ``signalcharacteristics/signalresolution``
(µV per unit; ``signalresolution`` is required: without it the unit is unknown) together with the patient
id (``generalpatientdata/patientid``). Philips statement codes are Philips' own: they give no label.

sierraecg reads document versions 1.03-1.04.02; for uncompressed waveforms (``compression`` other than
XLI) sierraecg 0.4 fails while rebuilding the limb leads in place, so such files are refused with that
reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from liteheart_core.data.formats import xmlutil as xu
from liteheart_core.data.formats.common import assemble, lead_name, number
from liteheart_core.data.signal import RawRecord, RecordError


def read(path: Path, rid: str, allow_single_lead: bool = False, reject_flat: bool = True) -> RawRecord:
    """Read a Philips XML ECG.

    Raises
    ------
    RecordError
        Not well-formed XML, a version or compression sierraecg does not read, no resolution, unknown rate,
        waveforms shorter than the stated duration, missing or duplicate leads, NaN samples.
    """
    import sierraecg

    root = xu.parse(path, rid, "Philips")
    signal = next(xu.find_all(root, "signalcharacteristics"), None)
    resolution = xu.text(signal, "signalresolution") if signal is not None else ""
    if not resolution:
        raise RecordError(rid, "Philips file states no signalresolution: the samples' unit is unknown")
    uv_per_unit = number(rid, resolution, "signalresolution")
    try:
        ecg = sierraecg.read_file(str(path))
    except (
        sierraecg.UnsupportedXmlFileError,
        sierraecg.MissingXmlElementError,
        sierraecg.MissingXmlAttributeError,
    ) as exc:
        raise RecordError(rid, f"Philips file not readable by sierraecg: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # sierraecg raises plain errors on corrupt or uncompressed data
        raise RecordError(
            rid, f"Philips waveforms cannot be decoded by sierraecg: {type(exc).__name__}: {exc}"
        ) from None
    if not ecg.leads:
        raise RecordError(rid, "Philips file holds no leads")
    fs = ecg.leads[0].sampling_freq
    n = int(round(ecg.leads[0].duration * fs / 1000.0))
    names, channels = [], []
    for lead in ecg.leads:
        samples = np.asarray(lead.samples, dtype=np.float64)
        if samples.size < n:
            raise RecordError(
                rid,
                f"lead {lead.label}: {samples.size} samples, the stated duration "
                f"{lead.duration} ms at {fs} Hz needs {n}",
            )
        names.append(lead_name(lead.label))
        channels.append(samples[:n] * uv_per_unit)
    return assemble(
        rid,
        names,
        channels,
        ["uV"] * len(names),
        fs,
        fmt="philips",
        where_fs="samplingrate",
        allow_single_lead=allow_single_lead,
        reject_flat=reject_flat,
        patient=xu.text(next(xu.find_all(root, "generalpatientdata"), None), "patientid"),
    )
