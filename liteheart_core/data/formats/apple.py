"""Apple Health ECG export (``electrocardiograms/ecg_<date>.csv``): a key-value header, then one sample a line.

The header the Health app writes (English locale)::

    Name,<the owner's name>
    Date of Birth,...
    Recorded Date,2024-03-01 08:15:42 +0100
    Classification,Sinus Rhythm
    Symptoms,
    Software Version,2
    Device,"Watch6,2"
    Sample Rate,512 hertz

    Lead,Lead I
    Unit,µV

    -24.306
    ...

No library reads it (it is a CSV of two parts), so this module does, with the csv module. ``Sample
Rate``, ``Lead`` and ``Unit`` must be there; the owner's name and birth date are never kept. The watch's
own classification gives a SNOMED CT code where it names a rhythm (``Sinus Rhythm`` 426783006, ``Atrial
Fibrillation`` 164889003); ``Inconclusive``, ``Poor Recording`` and the heart-rate classes give none.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np

from liteheart_core.data.formats.common import assemble, lead_name
from liteheart_core.data.signal import RawRecord, RecordError

CLASSIFICATION_CODES = {"sinus rhythm": "426783006", "atrial fibrillation": "164889003"}
_RATE = re.compile(r"^\s*([-+0-9.eE]+)\s*(hz|hertz)?\s*$", re.I)
MAX_BYTES = 64 << 20  # a 30-s recording at 512 Hz is ~150 kB; anything this large is no Apple ECG


def read(path: Path, rid: str, allow_single_lead: bool = False, reject_flat: bool = True) -> RawRecord:
    """Read an Apple Health ECG CSV (one lead, normally lead I at 512 Hz in µV).

    Raises
    ------
    RecordError
        Not UTF-8 text, no ``Sample Rate``/``Lead``/``Unit`` in the header, a rate without a number or in
        another unit than Hz, a sample that is no number, no samples, NaN samples, a lead other than I
        (which is no lead-I recording and no 12-lead one).
    """
    if Path(path).stat().st_size > MAX_BYTES:
        raise RecordError(rid, f"{Path(path).stat().st_size} bytes: too large for an Apple Health ECG export")
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecordError(rid, f"Apple Health CSV is not UTF-8 text: {exc}") from None
    header: dict[str, str] = {}
    samples: list[float] = []
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        key = cells[0]
        if not samples and _is_header_key(key) and len(cells) > 1:
            header.setdefault(key.lower(), cells[1])
            continue
        value = key.replace(",", ".") if len(cells) == 1 else key
        try:
            samples.append(float(value))
        except ValueError:
            if samples:
                raise RecordError(rid, f"line {line_no}: sample {value!r} is not a number") from None
            header.setdefault(key.lower(), cells[1] if len(cells) > 1 else "")
    for key in ("sample rate", "lead", "unit"):
        if key not in header:
            raise RecordError(rid, f"Apple Health CSV header has no {key.title()!r} line")
    match = _RATE.match(header["sample rate"])
    fs: object = float(match.group(1)) if match else header["sample rate"]
    lead = lead_name(header["lead"])
    if lead is None:
        raise RecordError(rid, f"lead {header['lead']!r} is no standard ECG lead")
    classification = header.get("classification", "").strip().lower()
    codes = (f"SNOMED:{CLASSIFICATION_CODES[classification]}",) if classification in CLASSIFICATION_CODES else ()
    return assemble(
        rid,
        [lead],
        [np.asarray(samples, dtype=np.float64)],
        [header["unit"]],
        fs,
        fmt="apple",
        where_fs=f"'Sample Rate,{header['sample rate']}'",
        allow_single_lead=allow_single_lead,
        reject_flat=reject_flat,
        source_id=header.get("recorded date", ""),
        codes=codes,
    )


def _is_header_key(key: str) -> bool:
    try:
        float(key.replace(",", "."))
        return False
    except ValueError:
        return True
