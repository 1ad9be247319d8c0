"""Hostile variants of each ECG format, built from a valid file of a small beating signal.

Each variant is ``(format, variant) -> {file name: bytes}`` plus the words its refusal must contain.
Variants: ``truncated`` (the file cut short), ``wrong_length`` (a declared length the data do not have),
``unknown_unit``, ``missing_rate``, ``nan`` (NaN samples, or a NaN scale where the format stores integers),
``duplicate_leads`` (for the one-lead Apple CSV, which has one lead line: ``wrong_lead``, lead II).
"""

from __future__ import annotations

import re
import tempfile
from functools import cache
from pathlib import Path

import numpy as np

from tests.data.formats import writers as W
from tests.fuzz.conftest import ecg_signal

FS = 100
N = 300  # 3 s: above preparation's 2-s minimum
NAMES = {
    "dicom": "rec.dcm",
    "aecg": "rec_aecg.xml",
    "muse": "rec_muse.xml",
    "philips": "rec_philips.xml",
    "edf": "rec.edf",
    "apple": "rec_watch.csv",
}
VARIANTS = ("truncated", "wrong_length", "unknown_unit", "missing_rate", "nan", "duplicate_leads")

# What each refusal must say (a regular expression on the reason).
EXPECTED: dict[tuple[str, str], str] = {
    ("dicom", "truncated"): r"truncated|not a readable DICOM|cannot be",
    ("dicom", "wrong_length"): r"truncated DICOM waveform",
    ("dicom", "unknown_unit"): r"no voltage unit",
    ("dicom", "missing_rate"): r"unknown sampling rate",
    ("dicom", "nan"): r"NaN|not a finite|cannot be decoded",
    ("dicom", "duplicate_leads"): r"appears twice",
    ("aecg", "truncated"): r"not well-formed",
    ("aecg", "wrong_length"): r"different lengths",
    ("aecg", "unknown_unit"): r"no voltage unit",
    ("aecg", "missing_rate"): r"unknown sampling rate",
    ("aecg", "nan"): r"NaN",
    ("aecg", "duplicate_leads"): r"appears twice",
    ("muse", "truncated"): r"not well-formed",
    ("muse", "wrong_length"): r"LeadSampleCountTotal",
    ("muse", "unknown_unit"): r"no voltage unit",
    ("muse", "missing_rate"): r"unknown sampling rate",
    ("muse", "nan"): r"not a finite number",
    ("muse", "duplicate_leads"): r"appears twice",
    ("philips", "truncated"): r"not well-formed",
    ("philips", "wrong_length"): r"stated duration",
    ("philips", "unknown_unit"): r"signalresolution",
    ("philips", "missing_rate"): r"samplingrate",
    ("philips", "nan"): r"not a finite number",
    ("philips", "duplicate_leads"): r"appears twice",
    ("edf", "truncated"): r"disagree on its length",
    ("edf", "wrong_length"): r"disagree on its length",
    ("edf", "unknown_unit"): r"no voltage unit",
    ("edf", "missing_rate"): r"sampling rate|EDF",
    ("edf", "nan"): r"NaN|EDF|finite",
    ("edf", "duplicate_leads"): r"appears twice",
    ("apple", "truncated"): r"no 'Lead' line|no 'Unit' line",
    ("apple", "wrong_length"): r"not a number",
    ("apple", "unknown_unit"): r"no voltage unit",
    ("apple", "missing_rate"): r"no 'Sample Rate' line",
    ("apple", "nan"): r"NaN",
    ("apple", "duplicate_leads"): r"missing leads I",
}


def signal() -> np.ndarray:
    """12 leads x 3 s at 100 Hz in mV, standard order."""
    return ecg_signal(12, N, FS).T


@cache
def valid(fmt: str) -> bytes:
    """A valid file of ``fmt`` (the bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="lh-fmt-"))
    path = folder / NAMES[fmt]
    x = signal()
    {
        "dicom": lambda: W.write_dicom(path, x, FS, patient="p1"),
        "aecg": lambda: W.write_aecg(path, x, FS, patient="p1"),
        "muse": lambda: W.write_muse(path, x, FS, patient="p1"),
        "philips": lambda: W.write_philips(path, x, FS, patient="p1"),
        "edf": lambda: W.write_edf(path, x, FS, patient="p1"),
        "apple": lambda: W.write_apple(path, x[0], FS),
    }[fmt]()
    return path.read_bytes()


def _dicom(edit) -> bytes:
    import io

    from pydicom import dcmread

    ds = dcmread(io.BytesIO(valid("dicom")))
    edit(ds)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _edf_field(blob: bytes, offset: int, width: int, value: str) -> bytes:
    return blob[:offset] + value.ljust(width)[:width].encode("ascii") + blob[offset + width :]


def _edf_signal_field(blob: bytes, field_offset: int, width: int, index: int, value: str) -> bytes:
    """Set one per-signal header field (``field_offset``: that field's start, relative to 256, for signal 0)."""
    ns = int(blob[252:256])
    return _edf_field(blob, 256 + field_offset * ns + index * width, width, value)


# per-signal field widths of the EDF header, in order: label 16, transducer 80, dimension 8, phys min 8,
# phys max 8, dig min 8, dig max 8, prefilter 80, samples per record 8, reserved 32
_EDF_OFFSETS = {"label": 0, "dimension": 16 + 80, "physical_min": 16 + 80 + 8, "physical_max": 16 + 80 + 16}


def _edf(variant: str) -> bytes:
    blob = valid("edf")
    if variant == "truncated":
        return blob[: len(blob) - len(blob) // 3]
    if variant == "wrong_length":
        return _edf_field(blob, 236, 8, str(int(blob[236:244]) + 5))
    if variant == "unknown_unit":
        return _edf_signal_field(blob, _EDF_OFFSETS["dimension"], 8, 0, "mmHg")
    if variant == "missing_rate":
        return _edf_field(blob, 244, 8, "0")  # a data record of 0 s: no rate
    if variant == "nan":
        ns = int(blob[252:256])
        out = blob
        for i in range(ns):  # physical range of zero width: no sample can be mapped to a value
            out = _edf_signal_field(out, _EDF_OFFSETS["physical_max"], 8, i, "nan")
        return out
    if variant == "duplicate_leads":
        return _edf_signal_field(blob, _EDF_OFFSETS["label"], 16, 1, "ECG I")
    raise ValueError(variant)


def _xml_replace(fmt: str, pattern: str, repl: str, count: int = 1) -> bytes:
    text = valid(fmt).decode("utf-8" if fmt != "muse" else "latin-1")
    new, n = re.subn(pattern, repl, text, count=count)
    assert n, (fmt, pattern)
    return new.encode("utf-8" if fmt != "muse" else "latin-1")


def variant_bytes(fmt: str, variant: str) -> bytes:
    """The bytes of a hostile ``variant`` of ``fmt``."""
    if variant == "truncated" and fmt != "edf":
        blob = valid(fmt)
        if fmt == "apple":  # the header cut before its Lead and Unit lines
            text = blob.decode("utf-8")
            return text[: text.index("Lead,")].encode("utf-8")
        return blob[: len(blob) // 2]
    if fmt == "edf":
        return _edf(variant)
    if fmt == "dicom":

        def wrong_length(ds):
            ds.WaveformSequence[0].NumberOfWaveformSamples = N * 2

        def unknown_unit(ds):
            for ch in ds.WaveformSequence[0].ChannelDefinitionSequence:
                ch.ChannelSensitivityUnitsSequence[0].CodeValue = "mm[Hg]"

        def missing_rate(ds):
            del ds.WaveformSequence[0].SamplingFrequency

        def nan(ds):
            for ch in ds.WaveformSequence[0].ChannelDefinitionSequence:
                ch.ChannelSensitivityCorrectionFactor = "NaN"

        def duplicate(ds):
            src = ds.WaveformSequence[0].ChannelDefinitionSequence[1].ChannelSourceSequence[0]
            src.CodeValue, src.CodeMeaning = "5.6.3-9-1", "Lead I"

        edits = {
            "wrong_length": wrong_length,
            "unknown_unit": unknown_unit,
            "missing_rate": missing_rate,
            "nan": nan,
            "duplicate_leads": duplicate,
        }
        return _dicom(edits[variant])
    if fmt == "aecg":
        return {
            "wrong_length": lambda: _xml_replace(fmt, r"(<digits>[^<]*?) -?\d+</digits>", r"\1</digits>"),
            "unknown_unit": lambda: _xml_replace(fmt, r'unit="uV"', 'unit="mmHg"', count=0),
            "missing_rate": lambda: _xml_replace(fmt, r"<increment [^>]*/>", ""),
            "nan": lambda: _xml_replace(fmt, r"<digits>-?\d+ ", "<digits>NaN "),
            "duplicate_leads": lambda: _xml_replace(fmt, 'MDC_ECG_LEAD_II"', 'MDC_ECG_LEAD_I"'),
        }[variant]()
    if fmt == "muse":
        rhythm = r"(<WaveformType>Rhythm</WaveformType>.*?)"
        return {
            "wrong_length": lambda: _xml_replace(
                fmt, rhythm + r"<LeadSampleCountTotal>\d+<", r"\1<LeadSampleCountTotal>9999<"
            ),
            "unknown_unit": lambda: _xml_replace(fmt, "MICROVOLTS", "FURLONGS", count=0),
            "missing_rate": lambda: _xml_replace(fmt, r"<SampleBase>[^<]*</SampleBase>", "", count=0),
            "nan": lambda: _xml_replace(
                fmt, rhythm + r"<LeadAmplitudeUnitsPerBit>[^<]*<", r"\1<LeadAmplitudeUnitsPerBit>NaN<"
            ),
            "duplicate_leads": lambda: _xml_replace(fmt, rhythm + r"<LeadID>II</LeadID>", r"\1<LeadID>I</LeadID>"),
        }[variant]()
    if fmt == "philips":
        return {
            "wrong_length": lambda: _xml_replace(fmt, r'durationperchannel="\d+"', 'durationperchannel="9000"'),
            "unknown_unit": lambda: _xml_replace(fmt, r"<signalresolution>[^<]*</signalresolution>", ""),
            "missing_rate": lambda: _xml_replace(fmt, r"<samplingrate>[^<]*</samplingrate>", ""),
            "nan": lambda: _xml_replace(fmt, r"<signalresolution>[^<]*<", "<signalresolution>NaN<"),
            "duplicate_leads": lambda: _xml_replace(fmt, r'leadlabels="I II ', 'leadlabels="I I '),
        }[variant]()
    if fmt == "apple":
        return {
            "wrong_length": lambda: _xml_replace(fmt, r"\n(-?\d+\.\d+)\r?\n", "\n\\1\nlost-bytes#@!\n"),
            "unknown_unit": lambda: _xml_replace(fmt, "Unit,µV", "Unit,mmHg"),
            "missing_rate": lambda: _xml_replace(fmt, r"Sample Rate,[^\n]*\n", ""),
            "nan": lambda: _xml_replace(fmt, r"\n(-?\d+\.\d+)\r?\n", "\nnan\n"),
            "duplicate_leads": lambda: _xml_replace(fmt, "Lead,Lead I", "Lead,Lead II"),
        }[variant]()
    raise ValueError((fmt, variant))
