"""Which ECG format a file holds, from its content: magic bytes, the XML root element, the CSV header.

The extension is only a hint: a DICOM export named ``*.bin``, an aECG named ``*.txt`` or an EDF without
an extension are found all the same. A file whose content is no known ECG format but whose extension
claims one (``.dcm``, ``.edf``, ``.bdf``) is still listed, so that it is refused with a reason instead of
silently left out; other files (notes, label tables, PDFs) are not ECGs and are ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

FORMATS: tuple[str, ...] = ("wfdb", "dicom", "aecg", "muse", "philips", "edf", "apple")
_HEAD_BYTES = 4096
_BY_EXTENSION = {".dcm": "dicom", ".dicom": "dicom", ".edf": "edf", ".bdf": "edf", ".hea": "wfdb"}
_XML_ROOTS = {"annotatedecg": "aecg", "restingecg": "muse", "restingecgdata": "philips"}
_ROOT = re.compile(rb"<\s*(?![?!])([A-Za-z_][\w.:-]*)")
# The keys of the Health app's (English) ECG export header; three of them make a file one, so that an
# export cut short or missing its rate line is still recognised, and refused with the reason.
_APPLE_KEYS = {
    "name",
    "date of birth",
    "recorded date",
    "classification",
    "symptoms",
    "software version",
    "device",
    "sample rate",
    "lead",
    "unit",
}


def sniff(head: bytes) -> str | None:
    """The format of a file that begins with ``head`` (a few kB), or None."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:8] == b"0       " and len(head) >= 256 and head[8:16].isascii():
        return "edf"  # EDF/EDF+: version "0" padded with spaces
    if head[:8] == b"\xffBIOSEMI":
        return "edf"  # BDF (24-bit EDF), read by the same library
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 (some Windows exports): look at it as UTF-8
        head = head[: len(head) // 2 * 2].decode("utf-16", "replace").encode("utf-8")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        body = re.sub(rb"<!--.*?-->", b"", text, flags=re.S)
        match = _ROOT.search(body)
        if match:
            local = match.group(1).split(b":")[-1].decode("ascii", "replace").lower()
            return _XML_ROOTS.get(local)
        return None
    try:
        lines = head.decode("utf-8-sig").splitlines()[:40]
    except UnicodeDecodeError:
        return None
    keys = {line.split(",", 1)[0].strip().strip('"').lower() for line in lines}
    if len(_APPLE_KEYS & keys) >= 3:
        return "apple"
    return None


def detect_format(path: Path) -> str | None:
    """The ECG format of ``path`` by content, falling back to an ECG extension; None for no ECG file."""
    path = Path(path)
    if path.suffix.lower() == ".hea":
        return "wfdb"
    try:
        with path.open("rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError:
        return None
    return sniff(head) or _BY_EXTENSION.get(path.suffix.lower())
