"""Independent writers of each ECG format, for tests: a signal in, a file of that format out.

Each writes with the format's own tools (pydicom for DICOM, pyedflib, not the reader's edfio, for EDF,
ElementTree for the XML formats, csv for Apple Health) and knows nothing of the readers under test.
Signals are [leads, T] in mV; ``unit`` picks the unit written (integers of 1 µV, or of 1 µV in mV).
"""

from __future__ import annotations

import base64
import csv
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
SCP_LEAD_CODES = {
    "I": "1",
    "II": "2",
    "III": "61",
    "aVR": "62",
    "aVL": "63",
    "aVF": "64",
    "V1": "3",
    "V2": "4",
    "V3": "5",
    "V4": "6",
    "V5": "7",
    "V6": "8",
}
ECG_12LEAD_SOP = "1.2.840.10008.5.1.4.1.1.9.1.1"


def microvolts(x: np.ndarray) -> np.ndarray:
    """Samples in whole µV (the resolution of PTB-XL's files), int16."""
    return np.round(np.asarray(x, dtype=np.float64) * 1000.0).astype(np.int16)


# --- DICOM (pydicom) -------------------------------------------------------------------------------


def write_dicom(
    path: Path,
    x: np.ndarray,
    fs: float,
    leads=LEADS,
    patient: str = "",
    codes=(),
    *,
    unit: str = "uV",
    sensitivity: float = 1.0,
    group_label: str = "RHYTHM",
    n_samples: int | None = None,
    data_bytes: bytes | None = None,
    scheme: str = "SCPECG",
) -> Path:
    """A 12-lead ECG Waveform Storage object with one multiplex group (samples in int16 x ``sensitivity``)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ECG_12LEAD_SOP
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = ECG_12LEAD_SOP, uid, "ECG"
    ds.PatientID = patient
    digital = np.round(np.asarray(x, dtype=np.float64) * 1000.0 / sensitivity).astype(np.int16)  # µV / step
    if unit == "mV":
        sens_value = sensitivity / 1000.0
    else:
        sens_value = sensitivity
    group = Dataset()
    group.MultiplexGroupLabel = group_label
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = len(leads)
    group.NumberOfWaveformSamples = n_samples if n_samples is not None else x.shape[1]
    group.SamplingFrequency = fs
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    channels = []
    for lead in leads:
        ch = Dataset()
        src = Dataset()
        src.CodeValue = f"5.6.3-9-{SCP_LEAD_CODES[lead]}" if lead in SCP_LEAD_CODES else lead
        src.CodingSchemeDesignator, src.CodeMeaning = "SCPECG", f"Lead {lead}"
        ch.ChannelSourceSequence = [src]
        ch.ChannelSensitivity = f"{sens_value:g}"
        units = Dataset()
        units.CodeValue, units.CodingSchemeDesignator, units.CodeMeaning = unit, "UCUM", unit
        ch.ChannelSensitivityUnitsSequence = [units]
        ch.ChannelSensitivityCorrectionFactor = "1"
        ch.ChannelBaseline = "0"
        ch.WaveformBitsStored = 16
        channels.append(ch)
    group.ChannelDefinitionSequence = channels
    group.WaveformData = data_bytes if data_bytes is not None else np.ascontiguousarray(digital.T).tobytes()
    ds.WaveformSequence = [group]
    anns = []
    for code in codes:
        ann = Dataset()
        concept = Dataset()
        concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = code, scheme, code
        ann.ConceptNameCodeSequence = [concept]
        ann.ReferencedWaveformChannels = [1, 0]
        ann.AnnotationGroupNumber = 0
        anns.append(ann)
    if anns:
        ds.WaveformAnnotationSequence = anns
    ds.save_as(str(path), enforce_file_format=True)
    return Path(path)


# --- HL7 aECG (ElementTree) -------------------------------------------------------------------------

HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"


def write_aecg(
    path: Path,
    x: np.ndarray,
    fs: float | None,
    leads=LEADS,
    patient: str = "",
    codes=(),
    *,
    unit: str = "uV",
    increment_unit: str = "s",
    record_id: str = "rec-1",
    snomed: tuple[str, ...] = (),
    mdc: tuple[str, ...] = (),
) -> Path:
    """An AnnotatedECG with one rhythm series: a GLIST_TS time sequence and SLIST_PQ leads (µV digits)."""
    ET.register_namespace("", HL7)
    ET.register_namespace("xsi", XSI)

    def el(parent, tag, **attrs):
        return ET.SubElement(parent, f"{{{HL7}}}{tag}", {k.replace("__", ":"): v for k, v in attrs.items()})

    root = ET.Element(f"{{{HL7}}}AnnotatedECG")
    el(root, "id", root="2.16.840.1.113883.19", extension=record_id)
    el(root, "code", code="93000", codeSystem="2.16.840.1.113883.6.12")
    subject = el(
        el(el(el(el(el(root, "componentOf"), "timepointEvent"), "componentOf"), "subjectAssignment"), "subject"),
        "trialSubject",
    )
    el(subject, "id", extension=patient)
    series = el(el(root, "component"), "series")
    el(series, "code", code="RHYTHM", codeSystem="2.16.840.1.113883.5.4")
    seq_set = el(el(series, "component"), "sequenceSet")
    time_seq = el(el(seq_set, "component"), "sequence")
    el(time_seq, "code", code="TIME_ABSOLUTE", codeSystem="2.16.840.1.113883.6.24")
    value = el(time_seq, "value", **{f"{{{XSI}}}type": "GLIST_TS"})
    el(value, "head", value="20240301081500.000")
    if fs is not None:
        step = 1.0 / fs if increment_unit == "s" else 1000.0 / fs
        el(value, "increment", value=repr(step), unit=increment_unit)
    digits = microvolts(x) if unit == "uV" else microvolts(x)
    scale = "1" if unit == "uV" else "0.001"
    unit_name = "uV" if unit == "uV" else unit
    for lead, row in zip(leads, digits):
        seq = el(el(seq_set, "component"), "sequence")
        el(seq, "code", code=f"MDC_ECG_LEAD_{lead.upper()}", codeSystem="2.16.840.1.113883.6.24")
        v = el(seq, "value", **{f"{{{XSI}}}type": "SLIST_PQ"})
        el(v, "origin", value="0", unit=unit_name)
        el(v, "scale", value=scale, unit=unit_name)
        d = el(v, "digits")
        d.text = " ".join(str(int(s)) for s in row)
    if codes or snomed or mdc:
        ann_set = el(el(series, "subjectOf"), "annotationSet")
        for code in mdc:
            el(el(el(ann_set, "component"), "annotation"), "code", code=code, codeSystem="2.16.840.1.113883.6.24")
        for code in codes:
            el(el(el(ann_set, "component"), "annotation"), "code", code=code, codeSystemName="SCPECG")
        for code in snomed:
            el(el(el(ann_set, "component"), "annotation"), "code", code=code, codeSystem="2.16.840.1.113883.6.96")
    ET.ElementTree(root).write(str(path), xml_declaration=True, encoding="UTF-8")
    return Path(path)


# --- GE MUSE (ElementTree) --------------------------------------------------------------------------


def write_muse(
    path: Path,
    x: np.ndarray,
    fs: float,
    leads=("I", "II", "V1", "V2", "V3", "V4", "V5", "V6"),
    patient: str = "",
    *,
    units_per_bit: float = 1.0,
    unit: str = "MICROVOLTS",
    declared_samples: int | None = None,
) -> Path:
    """A RestingECG with a Median and a Rhythm waveform; 8 leads (I, II, V1-V6) as MUSE stores them."""
    root = ET.Element("RestingECG")
    ET.SubElement(ET.SubElement(root, "MuseInfo"), "MuseVersion").text = "9.0.9.18167"
    ET.SubElement(ET.SubElement(root, "PatientDemographics"), "PatientID").text = patient
    demo = ET.SubElement(root, "TestDemographics")
    ET.SubElement(demo, "AcquisitionDate").text = "03-01-2024"
    ET.SubElement(demo, "AcquisitionTime").text = "08:15:00"
    stmt = ET.SubElement(ET.SubElement(root, "Diagnosis"), "DiagnosisStatement")
    ET.SubElement(stmt, "StmtText").text = "Normal sinus rhythm"
    index = {lead: i for i, lead in enumerate(LEADS)}
    for kind in ("Median", "Rhythm"):
        wave = ET.SubElement(root, "Waveform")
        ET.SubElement(wave, "WaveformType").text = kind
        ET.SubElement(wave, "NumberofLeads").text = str(len(leads))
        ET.SubElement(wave, "SampleBase").text = f"{fs:g}"
        ET.SubElement(wave, "SampleExponent").text = "0"
        for lead in leads:
            row = x[index[lead]] if kind == "Rhythm" else x[index[lead], : int(fs)]
            digital = np.round(row * 1000.0 / units_per_bit).astype("<i2")
            data = ET.SubElement(wave, "LeadData")
            ET.SubElement(data, "LeadByteCountTotal").text = str(digital.nbytes)
            n = declared_samples if declared_samples is not None and kind == "Rhythm" else digital.size
            ET.SubElement(data, "LeadSampleCountTotal").text = str(n)
            ET.SubElement(data, "LeadAmplitudeUnitsPerBit").text = f"{units_per_bit:g}"
            ET.SubElement(data, "LeadAmplitudeUnits").text = unit
            ET.SubElement(data, "LeadID").text = lead
            ET.SubElement(data, "WaveFormData").text = base64.b64encode(digital.tobytes()).decode()
    ET.ElementTree(root).write(str(path), xml_declaration=True, encoding="ISO-8859-1")
    return Path(path)


# --- Philips (ElementTree + an XLI encoder, the inverse of sierraecg's decoder) ----------------------


def _lzw_encode(data: bytes, bits: int = 10) -> bytes:
    """LZW with fixed ``bits``-bit codes, MSB first, a dictionary that stops growing at 2**bits - 2."""
    max_code = (1 << bits) - 2
    table = {bytes([i]): i for i in range(256)}
    next_code, codes, w = 256, [], b""
    for byte in data:
        wc = w + bytes([byte])
        if wc in table:
            w = wc
            continue
        codes.append(table[w])
        if next_code <= max_code:
            table[wc] = next_code
            next_code += 1
        w = bytes([byte])
    if w:
        codes.append(table[w])
    acc, n_bits, out = 0, 0, bytearray()
    for code in codes:
        acc = (acc << bits) | code
        n_bits += bits
        while n_bits >= 8:
            n_bits -= 8
            out.append((acc >> n_bits) & 0xFF)
    if n_bits:
        out.append((acc << (8 - n_bits)) & 0xFF)
    return bytes(out)


def _xli_chunk(samples: np.ndarray) -> bytes:
    """One lead as XLI: second-difference residuals (+64), hi bytes then lo bytes, LZW, 8-byte header."""
    s = [int(v) for v in samples]
    n = len(s)
    stored = [s[0], s[1]] + [2 * s[i] - s[i - 1] - s[i + 1] + 64 for i in range(2, n - 1)] + [64]
    first = 2 * s[1] - s[0] - s[2]
    words = [v & 0xFFFF for v in stored]
    payload = bytes([(w >> 8) & 0xFF for w in words] + [w & 0xFF for w in words])
    body = _lzw_encode(payload)
    return len(body).to_bytes(4, "little", signed=True) + b"\x00\x00" + first.to_bytes(2, "little", signed=True) + body


def write_philips(
    path: Path, x: np.ndarray, fs: int, patient: str = "", *, resolution: str | None = "1", version: str = "1.04.02"
) -> Path:
    """A PhilipsECG XML with XLI-compressed 12 leads (limb leads stored as Philips' residuals)."""
    d = {lead: microvolts(x[i]).astype(np.int64) for i, lead in enumerate(LEADS)}  # µV per unit = resolution 1
    stored = dict(d)
    stored["III"] = d["II"] - d["I"] - d["III"]
    stored["aVR"] = -d["aVR"] - np.floor_divide(d["I"] + d["II"], 2)
    stored["aVL"] = np.floor_divide(d["I"] - d["III"], 2) - d["aVL"]
    stored["aVF"] = np.floor_divide(d["II"] + d["III"], 2) - d["aVF"]
    blob = b"".join(_xli_chunk(stored[lead]) for lead in LEADS)
    root = ET.Element("restingecgdata")
    info = ET.SubElement(root, "documentinfo")
    ET.SubElement(info, "documenttype").text = "PhilipsECG"
    ET.SubElement(info, "documentversion").text = version
    ET.SubElement(ET.SubElement(ET.SubElement(root, "patient"), "generalpatientdata"), "patientid").text = patient
    sig = ET.SubElement(ET.SubElement(root, "dataacquisition"), "signalcharacteristics")
    ET.SubElement(sig, "samplingrate").text = str(fs)
    if resolution is not None:
        ET.SubElement(sig, "signalresolution").text = resolution
    ET.SubElement(sig, "acquisitiontype").text = "STD-12"
    ET.SubElement(sig, "numberchannelsallocated").text = "12"
    waves = ET.SubElement(root, "waveforms")
    parsed = ET.SubElement(
        waves,
        "parsedwaveforms",
        {
            "durationperchannel": str(int(round(x.shape[1] * 1000 / fs))),
            "dataencoding": "Base64",
            "compression": "XLI",
            "numberofleads": "12",
            "leadlabels": " ".join(LEADS),
        },
    )
    parsed.text = base64.b64encode(blob).decode()
    ET.ElementTree(root).write(str(path), xml_declaration=True, encoding="UTF-8")
    return Path(path)


# --- EDF (pyedflib) ---------------------------------------------------------------------------------


def write_edf(
    path: Path,
    x: np.ndarray,
    fs: float,
    leads=LEADS,
    patient: str = "",
    *,
    unit: str = "uV",
    label_prefix: str = "ECG ",
) -> Path:
    """An EDF+ file, one signal per lead, 16-bit, 1 µV per digital step (written by pyedflib)."""
    import pyedflib

    factor = 1000.0 if unit == "uV" else 1.0  # physical range = digital range x 1 µV: exact in EDF's 8 characters
    writer = pyedflib.EdfWriter(str(path), len(leads), file_type=pyedflib.FILETYPE_EDFPLUS)
    try:
        headers = []
        for lead in leads:
            headers.append(
                {
                    "label": f"{label_prefix}{lead}",
                    "dimension": unit,
                    "sample_frequency": fs,
                    "physical_max": round(32767 / 1000.0 * factor, 3),
                    "physical_min": round(-32768 / 1000.0 * factor, 3),
                    "digital_max": 32767,
                    "digital_min": -32768,
                    "transducer": "",
                    "prefilter": "",
                }
            )
        writer.setSignalHeaders(headers)
        if patient:
            writer.setPatientCode(patient)
        index = {lead: i for i, lead in enumerate(LEADS)}
        writer.writeSamples([microvolts(x[index[lead]]).astype(np.float64) / 1000.0 * factor for lead in leads])
    finally:
        writer.close()
    return Path(path)


# --- Apple Health CSV (csv) -------------------------------------------------------------------------


def write_apple(
    path: Path,
    lead_i: np.ndarray,
    fs: float = 512,
    *,
    classification: str = "Sinus Rhythm",
    unit: str = "µV",
    lead: str = "Lead I",
    rate_text: str | None = None,
    drop: str = "",
) -> Path:
    """An Apple Health ECG export: the header the Health app writes, then lead I in µV, one sample a line."""
    rows = [
        ["Name", "Jane Appleseed"],
        ["Date of Birth", "Jan 1, 1970"],
        ["Recorded Date", "2024-03-01 08:15:42 +0100"],
        ["Classification", classification],
        ["Symptoms", ""],
        ["Software Version", "2"],
        ["Device", "Watch6,2"],
        ["Sample Rate", rate_text or f"{fs:g} hertz"],
        [],
        ["Lead", lead],
        ["Unit", unit],
        [],
        [],
    ]
    rows = [r for r in rows if not r or r[0] != drop]
    scale = 1000.0 if unit in ("µV", "uV") else 1.0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerows(rows)
        for v in np.round(np.asarray(lead_i, dtype=np.float64) * 1000.0) / 1000.0 * scale:
            w.writerow([f"{v:.3f}"])
    return Path(path)
