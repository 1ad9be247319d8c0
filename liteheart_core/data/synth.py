"""Seeded synthetic 12-lead ECGs with PTB-XL superclass labels, written in the PTB-XL layout.

The generator works in the space of the cardiac dipole (the vectorcardiogram): every wave of
a beat is a Gaussian bump in time carrying a 3-D vector (x to the patient's left, y inferior,
z anterior). The 12 leads are projections of that dipole on lead vectors, so a disease that
moves the dipole along y or z (inferior or anterior infarction) is nearly invisible in lead I,
which looks along x only. That is the 12-lead -> 1-lead gap the project distils across.

Noise is generated per electrode (RA, LA, LL, V1..V6) and combined into leads the way an
ECG amplifier does, so Einthoven's and Goldberger's identities hold on noisy signals too.

Records at 100 Hz are rendered at 500 Hz and decimated with an anti-alias filter, as PTB-XL's
``records100`` were derived from ``records500``; mains hum is therefore only present at
``fs >= 250``, where 50 Hz lies inside the band.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb
from scipy import signal as sps
from scipy.special import expit

CLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
LEADS: tuple[str, ...] = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
WAVE_KEYS: tuple[str, ...] = (
    "p_on",
    "p_peak",
    "p_off",
    "qrs_on",
    "r_peak",
    "qrs_off",
    "t_on",
    "t_peak",
    "t_off",
)
# Marginal prevalence per record, close to PTB-XL's superclass statistics; NORM is exclusive.
BASE_PREVALENCE: dict[str, float] = {
    "NORM": 0.45,
    "MI": 0.15,
    "STTC": 0.25,
    "CD": 0.22,
    "HYP": 0.10,
}

# Subtypes per superclass with their relative frequencies in PTB-XL (rounded).
_SUBTYPES: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "MI": (("IMI", "ASMI", "ILMI", "AMI"), (0.42, 0.36, 0.10, 0.12)),
    "STTC": (("NDT", "NST_", "ISC_", "ISCAL", "ISCIN"), (0.38, 0.12, 0.25, 0.17, 0.08)),
    "CD": (("1AVB", "LAFB", "CRBBB", "CLBBB", "IRBBB"), (0.28, 0.22, 0.18, 0.17, 0.15)),
    "HYP": (("LVH", "RVH", "LAO/LAE"), (0.78, 0.08, 0.14)),
}

# Rows copied from PTB-XL's scp_statements.csv for every statement the generator emits.
_SCP_STATEMENTS_CSV = """\
,description,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass,Statement Category,SCP-ECG Statement Description,AHA code,aECG REFID,CDISC Code,DICOM Code
NDT,non-diagnostic T abnormalities,1.0,1.0,,STTC,STTC,other ST-T descriptive statements,non-diagnostic T abnormalities,,,,
NST_,non-specific ST changes,1.0,1.0,,STTC,NST_,Basic roots for coding ST-T changes and abnormalities,non-specific ST changes,145,MDC_ECG_RHY_STHILOST,,
NORM,normal ECG,1.0,,,NORM,NORM,Normal/abnormal,normal ECG,1,,,F-000B7
IMI,inferior myocardial infarction,1.0,,,MI,IMI,Myocardial Infarction,inferior myocardial infarction,161,,,
ASMI,anteroseptal myocardial infarction,1.0,,,MI,AMI,Myocardial Infarction,anteroseptal myocardial infarction,165,,,
LVH,left ventricular hypertrophy,1.0,,,HYP,LVH,Ventricular Hypertrophy,left ventricular hypertrophy,142,,C71076,
LAFB,left anterior fascicular block,1.0,,,CD,LAFB/LPFB,Intraventricular and intra-atrial Conduction disturbances,left anterior fascicular block,101,MDC_ECG_BEAT_BLK_ANT_L_HEMI,C62267,D3-33140
ISC_,non-specific ischemic,1.0,,,STTC,ISC_,Basic roots for coding ST-T changes and abnormalities,ischemic ST-T changes,226,,,
IRBBB,incomplete right bundle branch block,1.0,,,CD,IRBBB,Intraventricular and intra-atrial Conduction disturbances,incomplete right bundle branch block,105,MDC_ECG_BEAT_RBB_BLK_INCOMP,C71048,D3-33112
1AVB,first degree AV block,1.0,,,CD,_AVB,"Sinus node dysfunction, atrial and AV-conduction defects",first degree AV block,,MDC_ECG_RHY_AV_HEART_BLK_DEG_1,C111088,
ISCAL,ischemic in anterolateral leads,1.0,,,STTC,ISCA,ischemic ST-T changes,in anterolateral leads,,,,
CRBBB,complete right bundle branch block,1.0,,,CD,CRBBB,Intraventricular and intra-atrial Conduction disturbances,(complete) right bundle branch block,106,MDC_ECG_BEAT_RBB_BLK_COMP,C62270,D3-33110
CLBBB,complete left bundle branch block,1.0,,,CD,CLBBB,Intraventricular and intra-atrial Conduction disturbances,(complete) left bundle branch block,104,MDC_ECG_BEAT_LBB_BLK_COMP,C62269,D3-33120 or 122752
ILMI,inferolateral myocardial infarction,1.0,,,MI,IMI,Myocardial Infarction,inferolateral myocardial infarction,,,,
LAO/LAE,left atrial overload/enlargement,1.0,,,HYP,LAO/LAE,Atrial statements,left atrial overload/enlargement,140,,,
AMI,anterior myocardial infarction,1.0,,,MI,AMI,Myocardial Infarction,anterior myocardial infarction,160,,,
ISCIN,ischemic in inferior leads,1.0,,,STTC,ISCI,ischemic ST-T changes,in inferior leads,,,,
RVH,right ventricular hypertrophy,1.0,,,HYP,RVH,Ventricular Hypertrophy,right ventricular hypertrophy,143,,C71077,
STD_,non-specific ST depression,,1.0,,,,Basic roots for coding ST-T changes and abnormalities,non-specific ST depression,502,,,F-38278
LOWT,low amplitude T-waves,,1.0,,,,other ST-T descriptive statements,low amplitude T-waves,366,,,
INVT,inverted T-waves,,1.0,,,,other ST-T descriptive statements,inverted T-waves,367,,,
SR,sinus rhythm,,,1.0,,,Statements related to impulse formation (abnormalities),sinus rhythm,20,MDC_ECG_RHY_SINUS_RHY,,
STACH,sinus tachycardia,,,1.0,,,Statements related to impulse formation (abnormalities),sinus tachycardia,21,MDC_ECG_RHY_SINUS_TACHY,,
SBRAD,sinus bradycardia,,,1.0,,,Statements related to impulse formation (abnormalities),sinus bradycardia,22,MDC_ECG_RHY_SINUS_BRADY,,
"""

_MARGIN_S = 1.0  # rendered on both sides and cropped, so filters and beats have no edge effects
_RENDER_FS = 500  # the internal rate never drops below this: QRS bumps are only ~5 ms wide
_MIMIC_RATE = 0.1  # chance per absent class of a mild, unlabelled version of its finding
_MAINS_HZ = 50.0  # PTB-XL was recorded in Germany
_ADC_GAIN = 1000.0  # PTB-XL stores 1 digital unit per microvolt
_PRECORDIAL_DEG = (115.0, 95.0, 75.0, 55.0, 30.0, 5.0)  # from the left (x) towards anterior (z)
_PRECORDIAL_GAIN = (1.2, 1.8, 2.0, 2.0, 1.7, 1.3)  # chest electrodes sit close to the heart


def _unit(*xyz: float) -> np.ndarray:
    v = np.asarray(xyz, dtype=np.float64)
    return v / np.linalg.norm(v)


# Direction of each infarct territory in the heart's frame: infarction removes forces
# pointing towards it (Q waves) and injury currents point to it (ST elevation).
_TERRITORY: dict[str, np.ndarray] = {
    "IMI": _unit(-0.15, 1.0, -0.1),
    "ILMI": _unit(0.6, 0.8, -0.1),
    "ASMI": _unit(-0.3, 0.0, 1.0),
    "AMI": _unit(0.3, -0.05, 1.0),
    "ISCAL": _unit(0.55, 0.0, 0.85),
    "ISCIN": _unit(0.0, 1.0, 0.0),
}
_APEX = _unit(0.75, 0.45, 0.1)  # subendocardial ischaemia shifts ST away from the apex


@dataclass(frozen=True, eq=False)
class SynthRecord:
    """One synthetic 12-lead ECG with its labels and true wave positions.

    Attributes
    ----------
    signal : np.ndarray
        float32 array ``[T, 12]`` in mV, lead order :data:`LEADS`.
    fs : int
        Sampling rate in Hz.
    labels : tuple[str, ...]
        Diagnostic superclasses, a subset of :data:`CLASSES`.
    scp_codes : dict[str, float]
        PTB-XL style statements with likelihoods, e.g. ``{"IMI": 100.0, "SR": 0.0}``.
    waves : dict[str, np.ndarray]
        int64 sample indices, one per complete beat, for each key of :data:`WAVE_KEYS`.
    heart_rate : float
        Mean heart rate in bpm over the complete beats.
    """

    signal: np.ndarray
    fs: int
    labels: tuple[str, ...]
    scp_codes: dict[str, float]
    waves: dict[str, np.ndarray]
    heart_rate: float


@dataclass(frozen=True)
class Anatomy:
    """Patient-level traits shared by all records of one patient (angles in degrees, times in s)."""

    heart_rate: float
    qrs_axis: float
    t_axis_offset: float
    rotation: tuple[float, float, float]
    qrs_amplitude: float
    t_amplitude: float
    p_amplitude: float
    pr: float
    p_dur: float
    qrs_dur: float
    qtc: float
    lead_angles: tuple[float, ...]  # I, II in the frontal plane, then V1..V6 horizontally
    lead_gains: tuple[float, ...]
    early_repolarization: float  # mV of benign concordant ST elevation, mostly 0


@dataclass
class _Morphology:
    """Mutable beat description that the class effects edit before rendering."""

    pr: float
    p_dur: float
    qrs_dur: float
    qtc: float
    vec: dict[str, np.ndarray]  # p, p2, q, r, s, x, t, st
    q_shape: tuple[float, float] = (0.14, 0.055)  # centre and sigma as fractions of QRS
    r_shape: tuple[float, float] = (0.42, 0.12)
    x_shape: tuple[float, float] = (0.8, 0.08)


def _frontal(angle_deg: float, z: float = 0.0) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([math.cos(a), math.sin(a), z])


def sample_anatomy(rng: np.random.Generator, age: float = 55.0, sex: int = 0) -> Anatomy:
    """Draw the traits of one patient.

    Parameters
    ----------
    rng : np.random.Generator
        Source of randomness.
    age : float
        Age in years; older hearts have lower voltage and a more leftward axis.
    sex : int
        0 male, 1 female (PTB-XL coding); women have lower voltage and longer QTc.

    Returns
    -------
    Anatomy
        The sampled traits.
    """
    habitus = math.exp(rng.normal(0.0, 0.22))
    rot = rng.normal(0.0, (8.0, 15.0, 8.0))  # heart position in the chest
    voltage = habitus * (1.0 - 0.004 * (age - 50.0)) * (0.88 if sex else 1.0)
    return Anatomy(
        heart_rate=float(np.clip(rng.normal(72.0, 12.0), 50.0, 110.0)),
        qrs_axis=float(np.clip(rng.normal(50.0 - 0.3 * (age - 50.0), 22.0), -30.0, 100.0)),
        t_axis_offset=float(rng.normal(0.0, 12.0)),
        rotation=(float(rot[0]), float(rot[1]), float(rot[2])),
        qrs_amplitude=1.5 * voltage,
        t_amplitude=0.32 * math.exp(rng.normal(0.0, 0.25)),
        p_amplitude=0.14 * math.exp(rng.normal(0.0, 0.2)),
        pr=float(np.clip(rng.normal(0.155, 0.018), 0.12, 0.20)),
        p_dur=float(np.clip(rng.normal(0.095, 0.01), 0.075, 0.11)),
        qrs_dur=float(np.clip(rng.normal(0.088, 0.008), 0.072, 0.108)),
        qtc=float(np.clip(rng.normal(0.405 + 0.012 * sex, 0.018), 0.36, 0.45)),
        lead_angles=tuple(float(a) for a in np.r_[0.0, 60.0, _PRECORDIAL_DEG] + rng.normal(0.0, 4.0, 8)),
        lead_gains=tuple(float(g) for g in np.exp(rng.normal(0.0, 0.08, 8))),
        early_repolarization=float(rng.uniform(0.03, 0.1)) if rng.random() < 0.12 else 0.0,
    )


def _base_morphology(rng: np.random.Generator, a: Anatomy) -> _Morphology:
    """Normal beat in the heart's frame: septal q, main R, terminal S, concordant T."""
    r = a.qrs_amplitude * _unit(*_frontal(a.qrs_axis, -0.25))
    t_dir = _unit(*_frontal(0.5 * a.qrs_axis + 25.0 + a.t_axis_offset, 0.3))
    vec = {
        "p": a.p_amplitude * _unit(*_frontal(rng.normal(55.0, 10.0), 0.1)),
        "p2": np.zeros(3),
        "q": a.qrs_amplitude * rng.uniform(0.08, 0.16) * _unit(-0.5, rng.normal(0.1, 0.2), 0.85),
        "r": r,
        "s": a.qrs_amplitude * rng.uniform(0.25, 0.45) * _unit(-0.3, -0.4, -0.85),
        "x": np.zeros(3),
        "t": a.t_amplitude * t_dir,
        "st": a.early_repolarization * t_dir,
    }
    return _Morphology(pr=a.pr, p_dur=a.p_dur, qrs_dur=a.qrs_dur, qtc=a.qtc, vec=vec)


def _likelihood(rng: np.random.Generator, severity: float) -> float:
    # Cardiologists hedge on borderline findings; PTB-XL keeps that as a lower likelihood.
    if severity < 0.25:
        return 50.0
    return 100.0 if rng.random() < 0.8 else 80.0


def _severity(rng: np.random.Generator) -> float:
    """How strongly a labelled finding shows. About one labelled record in eight is
    borderline: the statement is there but the signal barely carries it (label noise)."""
    return rng.uniform(0.0, 0.25) if rng.random() < 0.12 else rng.uniform(0.3, 1.0)


def _blend(old: np.ndarray, new: np.ndarray, weight: float) -> np.ndarray:
    return (1.0 - weight) * old + weight * new


def _redirect_t(m: _Morphology, towards: np.ndarray, keep: float, amount: float) -> None:
    """Remove (1 - keep) of the T component along ``towards`` and push T ``amount`` mV away."""
    t = m.vec["t"]
    m.vec["t"] = t - (1.0 - keep) * float(t @ towards) * towards - amount * towards


def _apply_hyp(m: _Morphology, rng: np.random.Generator, sev: float) -> dict[str, float]:
    kind = str(rng.choice(_SUBTYPES["HYP"][0], p=_SUBTYPES["HYP"][1]))
    v = m.vec
    r_amp, r_hat = float(np.linalg.norm(v["r"])), _unit(*v["r"])
    if kind == "LVH":
        r_hat = _unit(*(r_hat + 0.5 * sev * _unit(0.6, -0.1, -0.75)))
        v["r"] = r_amp * (1.0 + sev * rng.uniform(0.4, 1.0)) * r_hat
        v["s"] = v["s"] * (1.0 + sev * rng.uniform(0.3, 0.8))
        m.qrs_dur += sev * rng.uniform(0.0, 0.012)
        if rng.random() < 0.35 * sev:  # strain: repolarisation opposes the large QRS forces
            _redirect_t(m, r_hat, keep=1.0 - sev, amount=sev * rng.uniform(0.1, 0.3))
            v["st"] = v["st"] - sev * rng.uniform(0.03, 0.1) * r_hat
    elif kind == "RVH":
        v["r"] = r_amp * rng.uniform(0.9, 1.3) * _unit(*_blend(r_hat, _unit(-0.3, 0.8, 0.6), sev))
        s_amp, s_hat = float(np.linalg.norm(v["s"])), _unit(*v["s"])
        v["s"] = s_amp * (1.0 + sev * rng.uniform(0.0, 0.5)) * _unit(*_blend(s_hat, _unit(-0.8, 0.2, 0.3), sev))
    else:  # left atrial enlargement: long, notched P with a posterior terminal part
        m.p_dur += sev * rng.uniform(0.02, 0.04)
        m.pr = max(m.pr, m.p_dur + 0.04)
        p_amp = float(np.linalg.norm(v["p"]))
        v["p2"] = p_amp * sev * rng.uniform(0.6, 1.0) * _unit(0.5, 0.2, -0.85)
        v["r"] = v["r"] * (1.0 + sev * rng.uniform(0.0, 0.25))
    return {kind: _likelihood(rng, sev)}


def _apply_bbb(m: _Morphology, rng: np.random.Generator, sev: float, kind: str) -> None:
    v = m.vec
    amp = float(np.linalg.norm(v["r"]))
    if kind in ("CRBBB", "IRBBB"):
        # Late, slow right-ventricular activation: R' in V1, broad S in I and V6.
        complete = kind == "CRBBB"
        target = rng.uniform(0.12, 0.155) if complete else rng.uniform(0.10, 0.118)
        m.qrs_dur += sev * max(0.0, target - m.qrs_dur)
        x_hat = _unit(-0.6, -0.1, 0.8)
        v["x"] = amp * sev * (rng.uniform(0.4, 0.8) if complete else rng.uniform(0.2, 0.45)) * x_hat
        v["s"] = (1.0 - 0.4 * sev) * v["s"]
        if complete:
            _redirect_t(m, x_hat, keep=1.0 - sev, amount=sev * rng.uniform(0.1, 0.3))
        return
    # CLBBB: septum activated left to right, broad notched leftward R, discordant ST-T.
    m.qrs_dur += sev * max(0.0, rng.uniform(0.13, 0.17) - m.qrs_dur)
    r_hat = _unit(0.8, rng.normal(0.2, 0.2), -0.6)
    r_new = amp * rng.uniform(1.0, 1.4) * r_hat
    lbbb = {
        "q": amp * rng.uniform(0.1, 0.2) * _unit(0.6, 0.1, -0.8),
        "r": r_new,
        "x": r_new * rng.uniform(0.4, 0.7),
        "s": 0.2 * v["s"],
        "t": -rng.uniform(0.25, 0.5) * r_hat,
        "st": v["st"] - rng.uniform(0.05, 0.15) * r_hat,
    }
    for key, new in lbbb.items():
        v[key] = _blend(v[key], new, sev)
    m.r_shape = (0.42 - 0.04 * sev, 0.12 + 0.02 * sev)
    m.x_shape = (0.64, 0.12)


def _apply_cd(m: _Morphology, rng: np.random.Generator, sev: float) -> dict[str, float]:
    kind = str(rng.choice(_SUBTYPES["CD"][0], p=_SUBTYPES["CD"][1]))
    if kind == "1AVB":
        m.pr = max(m.pr, 0.19 + sev * rng.uniform(0.02, 0.13))
    elif kind == "LAFB":
        r = m.vec["r"]
        axis = math.degrees(math.atan2(r[1], r[0]))
        axis += sev * (rng.uniform(-75.0, -40.0) - axis)
        m.vec["r"] = float(np.linalg.norm(r)) * _unit(*_frontal(axis, -0.25))
        m.qrs_dur += sev * rng.uniform(0.0, 0.012)
    else:
        _apply_bbb(m, rng, sev, kind)
    return {kind: _likelihood(rng, sev)}


def _apply_mi(m: _Morphology, rng: np.random.Generator, sev: float) -> dict[str, float]:
    kind = str(rng.choice(_SUBTYPES["MI"][0], p=_SUBTYPES["MI"][1]))
    n = _TERRITORY[kind]
    v = m.vec
    # Dead myocardium: forces towards the territory vanish, leaving a wide Q pointing away.
    v["q"] = v["q"] - sev * rng.uniform(0.25, 0.6) * n
    m.q_shape = (0.14 + 0.06 * sev, 0.055 + 0.025 * sev)
    r_towards = float(v["r"] @ n)
    if r_towards > 0.0:
        v["r"] = v["r"] - sev * rng.uniform(0.4, 0.9) * r_towards * n
    if rng.random() < 0.25:  # acute: injury current towards the territory
        v["st"] = v["st"] + sev * rng.uniform(0.1, 0.3) * n
        v["t"] = v["t"] + sev * rng.uniform(0.1, 0.3) * n
    else:  # evolved: T inverted over the scar
        _redirect_t(m, n, keep=1.0 - sev, amount=sev * rng.uniform(0.05, 0.25))
    return {kind: _likelihood(rng, sev)}


def _apply_sttc(m: _Morphology, rng: np.random.Generator, sev: float) -> dict[str, float]:
    kind = str(rng.choice(_SUBTYPES["STTC"][0], p=_SUBTYPES["STTC"][1]))
    v = m.vec
    t_factor, depression = {
        "NDT": (rng.uniform(-0.1, 0.45), 0.0),
        "NST_": (rng.uniform(0.3, 0.8), rng.uniform(0.03, 0.08)),
        "ISC_": (rng.uniform(-0.7, 0.2), rng.uniform(0.05, 0.2)),
    }.get(kind, (1.0, rng.uniform(0.0, 0.06)))
    v["t"] = v["t"] * (1.0 - sev * (1.0 - t_factor))
    if kind in _TERRITORY:  # regional ischaemia: T inverted over the territory
        _redirect_t(m, _TERRITORY[kind], keep=1.0 - sev, amount=sev * rng.uniform(0.1, 0.35))
    v["st"] = v["st"] - sev * depression * _APEX
    codes = {kind: _likelihood(rng, sev)}
    # Form statements PTB-XL adds alongside (likelihood 0 and no diagnostic class, as there).
    if sev * depression >= 0.05:
        codes["STD_"] = 0.0
    t_along_apex = float(v["t"] @ _APEX)
    if t_along_apex < -0.05:
        codes["INVT"] = 0.0
    elif t_along_apex < 0.1:
        codes["LOWT"] = 0.0
    return codes


_EFFECTS = {"HYP": _apply_hyp, "CD": _apply_cd, "MI": _apply_mi, "STTC": _apply_sttc}


def _rotation_matrix(deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = (math.radians(d) for d in deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _lead_matrix(a: Anatomy) -> np.ndarray:
    """``[12, 3]`` lead vectors; the derived limb leads are built from I and II so the
    Einthoven/Goldberger identities are exact."""
    ang, gain = np.radians(a.lead_angles), np.asarray(a.lead_gains)
    lead_i = gain[0] * np.array([math.cos(ang[0]), math.sin(ang[0]), 0.0])
    lead_ii = gain[1] * np.array([math.cos(ang[1]), math.sin(ang[1]), 0.0])
    limb = [lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2]
    tilt = np.linspace(0.0, 0.2, 6)  # lateral chest electrodes sit a little lower
    chest = [
        g * pg * np.array([math.cos(t), y, math.sin(t)])
        for t, y, g, pg in zip(ang[2:], tilt, gain[2:], _PRECORDIAL_GAIN)
    ]
    return np.stack(limb + chest)


# Electrodes RA, LA, LL, V1..V6 -> leads; the precordial leads are referenced to Wilson's
# central terminal (RA + LA + LL) / 3.
_ELECTRODE_TO_LEAD = np.zeros((12, 9))
_ELECTRODE_TO_LEAD[:6, :3] = np.array(
    [[-1, 1, 0], [-1, 0, 1], [0, -1, 1], [1, -0.5, -0.5], [-0.5, 1, -0.5], [-0.5, -0.5, 1]]
)
_ELECTRODE_TO_LEAD[6:, :3] = -1.0 / 3.0
_ELECTRODE_TO_LEAD[6:, 3:] = np.eye(6)


def _rr_floor(m: _Morphology) -> float:
    """Shortest RR that keeps T of one beat ahead of the next P (QT from Fridericia)."""
    extra = (m.qrs_dur - 0.09) + m.pr + 0.04
    rr = 0.8
    for _ in range(20):
        rr = m.qtc * rr ** (1.0 / 3.0) + extra
    return rr


def _beat_times(
    rng: np.random.Generator, m: _Morphology, hr: float, seconds: float, f_resp: float
) -> dict[str, np.ndarray]:
    """Fiducial times (s) of every beat in ``[-margin, seconds + margin]``."""
    rsa, lf, jitter = rng.uniform(0.01, 0.06), rng.uniform(0.0, 0.02), rng.uniform(0.005, 0.02)
    floor = _rr_floor(m)
    rr_mean = max(60.0 / hr, floor / (1.0 - rsa - lf - 2.0 * jitter))
    n_max = int((seconds + 2.0 * _MARGIN_S) / (0.6 * rr_mean)) + 3
    t_approx = np.arange(n_max) * rr_mean
    rr = rr_mean * (
        1.0
        + rsa * np.sin(2 * np.pi * f_resp * t_approx + rng.uniform(0, 2 * np.pi))
        + lf * np.sin(2 * np.pi * 0.1 * t_approx + rng.uniform(0, 2 * np.pi))
        + jitter * rng.standard_normal(n_max)
    )
    rr = np.maximum(rr, floor)
    qt = m.qtc * rr ** (1.0 / 3.0) + (m.qrs_dur - 0.09)  # QT follows the preceding RR
    for k in range(1, n_max):  # the next P must not start before this T ends
        rr[k] = max(rr[k], qt[k - 1] + m.pr + 0.04)
        qt[k] = m.qtc * rr[k] ** (1.0 / 3.0) + (m.qrs_dur - 0.09)
    r_peak = -_MARGIN_S - rng.uniform(0.0, rr_mean) + np.cumsum(rr)
    keep = r_peak < seconds + _MARGIN_S - 0.1
    r_peak, qt, rr = r_peak[keep], qt[keep], rr[keep]
    qrs_on = r_peak - m.r_shape[0] * m.qrs_dur
    qrs_off = qrs_on + m.qrs_dur
    jt = qt - m.qrs_dur
    t_on, t_off = qrs_off + 0.32 * jt, qrs_off + jt
    p_on = qrs_on - m.pr
    return {
        "p_on": p_on,
        "p_peak": p_on + m.p_dur / 2,
        "p_off": p_on + m.p_dur,
        "qrs_on": qrs_on,
        "r_peak": r_peak,
        "qrs_off": qrs_off,
        "t_on": t_on,
        "t_peak": t_on + 0.6 * (t_off - t_on),
        "t_off": t_off,
    }


def _bumps(
    t: np.ndarray, centre: np.ndarray, sigma_left: np.ndarray, sigma_right: np.ndarray, weight: np.ndarray
) -> np.ndarray:
    """Sum over beats of (possibly skewed) Gaussians, ``[len(t)]``."""
    z = t[None, :] - centre[:, None]
    sigma = np.where(z < 0.0, sigma_left[:, None], sigma_right[:, None])
    return weight @ np.exp(-0.5 * (z / sigma) ** 2)


def _render_dipole(m: _Morphology, times: dict[str, np.ndarray], t: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Dipole ``[len(t), 3]`` of all beats; ``weight`` is a per-beat respiratory gain."""
    ones = np.ones_like(times["r_peak"])
    d, on = m.qrs_dur, times["qrs_on"]
    p_on, pd_ = times["p_on"], m.p_dur
    t_len = times["t_off"] - times["t_on"]
    waves = {
        "p": (p_on + 0.5 * pd_, ones * pd_ / 5, ones * pd_ / 5),
        "p2": (p_on + 0.72 * pd_, ones * pd_ / 9, ones * pd_ / 9),
        "q": (on + m.q_shape[0] * d, ones * m.q_shape[1] * d, ones * m.q_shape[1] * d),
        "r": (on + m.r_shape[0] * d, ones * m.r_shape[1] * d, ones * m.r_shape[1] * d),
        "s": (on + 0.72 * d, ones * 0.09 * d, ones * 0.09 * d),
        "x": (on + m.x_shape[0] * d, ones * m.x_shape[1] * d, ones * m.x_shape[1] * d),
        "t": (times["t_peak"], 0.6 * t_len / 2.5, 0.4 * t_len / 2.5),
    }
    dipole = np.zeros((t.size, 3))
    for name, (centre, s_left, s_right) in waves.items():
        if np.any(m.vec[name]):
            dipole += np.outer(_bumps(t, centre, s_left, s_right, weight), m.vec[name])
    if np.any(m.vec["st"]):
        # Plateau from the J point into the T upstroke: the injury current of the ST segment.
        rise = expit((t[None, :] - (times["qrs_off"] - 0.01)[:, None]) / 0.005)
        fall_at = 0.5 * (times["t_on"] + times["t_peak"])
        fall = expit((fall_at[:, None] - t[None, :]) / (0.15 * t_len[:, None]))
        dipole += np.outer(weight @ (rise * fall), m.vec["st"])
    return dipole


@lru_cache(maxsize=8)
def _emg_sos(fs: int) -> np.ndarray:
    # Muscle noise lives above ~20 Hz; the cut-off scales down so it stays below Nyquist.
    return sps.butter(2, min(20.0, 0.3 * fs) / (fs / 2), btype="highpass", output="sos")


def _electrode_noise(rng: np.random.Generator, n: int, fs: int, f_resp: float, scale: float) -> np.ndarray:
    """Baseline wander, muscle noise and mains hum per electrode, ``[n, 9]`` in mV."""
    t = np.arange(n) / fs
    breath = np.sin(2 * np.pi * f_resp * t + rng.uniform(0, 2 * np.pi))
    noise = np.outer(breath, scale * rng.uniform(0.0, 0.08, 9))
    freqs, amps = rng.uniform(0.05, 0.6, (3, 9)), scale * rng.uniform(0.0, 0.06, (3, 9))
    phases = rng.uniform(0, 2 * np.pi, (3, 9))
    for k in range(3):
        noise += amps[k] * np.sin(2 * np.pi * np.outer(t, freqs[k]) + phases[k])
    emg_level = scale * math.exp(rng.uniform(math.log(0.003), math.log(0.03)))
    envelope = 1.0 + 0.8 * np.maximum(0.0, np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t))
    white = rng.standard_normal((n, 9)) * rng.uniform(0.5, 1.5, 9)
    noise += emg_level * envelope[:, None] * sps.sosfilt(_emg_sos(fs), white, axis=0)
    if fs >= 250:  # below that PTB-XL's decimation filter has removed the hum
        hum = np.sin(2 * np.pi * _MAINS_HZ * t + rng.uniform(0, 2 * np.pi))
        noise += np.outer(hum, scale * rng.uniform(0.0, 0.04, 9))
    return noise


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    unknown = [lab for lab in labels if lab not in CLASSES]
    if unknown:
        raise ValueError(f"unknown labels {unknown}; expected a subset of {CLASSES}")
    if not labels:
        raise ValueError("labels is empty; use ('NORM',) for a normal ECG")
    if "NORM" in labels and len(set(labels)) > 1:
        raise ValueError(f"NORM is exclusive in PTB-XL but labels are {tuple(labels)}")
    return tuple(c for c in CLASSES if c in labels)


def _rhythm_code(hr: float) -> str:
    return "SBRAD" if hr < 60.0 else "STACH" if hr > 100.0 else "SR"


def generate_record(
    rng: np.random.Generator,
    labels: Sequence[str],
    fs: int = 100,
    seconds: float = 10.0,
    *,
    anatomy: Anatomy | None = None,
    noise_scale: float = 1.0,
) -> SynthRecord:
    """Generate one labelled 12-lead ECG.

    Parameters
    ----------
    rng : np.random.Generator
        Source of randomness; the same generator state gives the same record.
    labels : Sequence[str]
        Non-empty subset of :data:`CLASSES`; NORM cannot be combined with others.
    fs : int
        Sampling rate in Hz, 100 to 2000.
    seconds : float
        Duration, 4 to 120 s.
    anatomy : Anatomy or None
        Patient traits (for repeated records of one patient); drawn from ``rng`` if None.
    noise_scale : float
        Multiplier of all noise; 0 gives the clean signal. The clean part of a record does
        not depend on it, so ``noisy - clean`` for the same seed is the noise alone.

    Returns
    -------
    SynthRecord
        Signal, labels, PTB-XL statements, true wave positions and heart rate.
    """
    labels = _check_labels(labels)
    if not 100 <= fs <= 2000:
        raise ValueError(f"fs={fs} Hz is outside 100..2000 Hz")
    if not 4.0 <= seconds <= 120.0:
        raise ValueError(f"seconds={seconds} is outside 4..120 s (two full beats at 45 bpm)")
    if noise_scale < 0.0:
        raise ValueError(f"noise_scale={noise_scale} must be >= 0")
    noise_rng = np.random.default_rng(rng.integers(2**63))
    anatomy = anatomy if anatomy is not None else sample_anatomy(rng)
    m = _base_morphology(rng, anatomy)
    codes = {"NORM": _likelihood(rng, 1.0)} if labels == ("NORM",) else {}
    for label in ("HYP", "CD", "MI", "STTC"):  # later effects act on the earlier ones
        if label in labels:
            codes.update(_EFFECTS[label](m, rng, _severity(rng)))
        elif rng.random() < _MIMIC_RATE:
            # Unlabelled borderline finding, as in real "normal" and single-label ECGs.
            _EFFECTS[label](m, rng, rng.uniform(0.0, 0.3))

    n_out = int(round(seconds * fs))
    factor = max(1, math.ceil(_RENDER_FS / fs))
    pad = int(_MARGIN_S * fs)
    t = np.arange((n_out + 2 * pad) * factor) / (fs * factor) - _MARGIN_S
    f_resp = rng.uniform(0.15, 0.35)
    hr = anatomy.heart_rate * math.exp(rng.normal(0.0, 0.05))
    times = _beat_times(rng, m, hr, seconds, f_resp)
    breathing = 1.0 + rng.uniform(0.02, 0.08) * np.sin(2 * np.pi * f_resp * times["r_peak"])
    dipole = _render_dipole(m, times, t, breathing) @ _rotation_matrix(anatomy.rotation).T
    if factor > 1:
        dipole = sps.resample_poly(dipole, 1, factor, axis=0)
    leads = dipole[pad : pad + n_out] @ _lead_matrix(anatomy).T
    if noise_scale > 0.0:
        level = noise_scale * math.exp(noise_rng.normal(0.0, 0.4))
        leads += _electrode_noise(noise_rng, n_out, fs, f_resp, level) @ _ELECTRODE_TO_LEAD.T
    return _assemble(leads, fs, labels, codes, times)


def _assemble(
    leads: np.ndarray, fs: int, labels: tuple[str, ...], codes: dict[str, float], times: dict[str, np.ndarray]
) -> SynthRecord:
    idx = {k: np.rint(times[k] * fs).astype(np.int64) for k in WAVE_KEYS}
    complete = (idx["p_on"] >= 0) & (idx["t_off"] <= leads.shape[0] - 1)
    waves = {k: v[complete] for k, v in idx.items()}
    r = times["r_peak"][complete]
    if r.size < 2:
        raise ValueError(f"only {r.size} complete beat(s) in {leads.shape[0] / fs} s; use longer records")
    heart_rate = 60.0 * (r.size - 1) / float(r[-1] - r[0])
    scp = dict(codes)
    scp[_rhythm_code(heart_rate)] = 0.0
    return SynthRecord(
        signal=leads.astype(np.float32), fs=fs, labels=labels, scp_codes=scp, waves=waves, heart_rate=heart_rate
    )


@lru_cache(maxsize=64)
def _conditional_rates(marginals: tuple[float, ...], p_norm: float) -> np.ndarray:
    """Per-class draw rates for abnormal records such that, after rejecting empty draws,
    each class reaches its marginal prevalence."""
    p = np.asarray(marginals) / (1.0 - p_norm)
    if p.sum() <= 1.001 or p.max() > 1.0:
        raise ValueError(
            f"disease prevalences {marginals} must sum to more than, and each stay below, "
            f"the abnormal share {1.0 - p_norm:.3f}"
        )
    # q = p * P(non-empty) with P(non-empty) = 1 - prod(1 - q): solve for that probability s.
    lo, hi = 1e-9, 1.0 / p.max()
    for _ in range(80):
        s = 0.5 * (lo + hi)
        lo, hi = (s, hi) if 1.0 - np.prod(1.0 - p * s) > s else (lo, s)
    return p * 0.5 * (lo + hi)


def sample_labels(rng: np.random.Generator, prevalence: Mapping[str, float] | None = None) -> tuple[str, ...]:
    """Draw a PTB-XL-like multi-label set.

    Parameters
    ----------
    rng : np.random.Generator
        Source of randomness.
    prevalence : Mapping[str, float] or None
        Marginal prevalence per class in :data:`CLASSES`; :data:`BASE_PREVALENCE` if None.
        NORM is exclusive; the other classes co-occur independently given "abnormal".

    Returns
    -------
    tuple[str, ...]
        Labels in :data:`CLASSES` order, ``("NORM",)`` or a non-empty set of diseases.
    """
    prev = dict(BASE_PREVALENCE if prevalence is None else prevalence)
    if set(prev) != set(CLASSES):
        raise ValueError(f"prevalence keys {sorted(prev)} must be exactly {CLASSES}")
    if not 0.0 <= prev["NORM"] < 1.0:
        raise ValueError(f"NORM prevalence {prev['NORM']} must be in [0, 1)")
    if rng.random() < prev["NORM"]:
        return ("NORM",)
    rates = _conditional_rates(tuple(float(prev[c]) for c in CLASSES[1:]), float(prev["NORM"]))
    while True:
        picked = rng.random(rates.size) < rates
        if picked.any():
            return tuple(c for c, hit in zip(CLASSES[1:], picked) if hit)


def _site_profiles(rng: np.random.Generator, weights: np.ndarray) -> list[tuple[dict[str, float], float]]:
    """Class mix and noise level per site: hospitals differ (non-IID federated clients).

    Log-multipliers are centred on the site-size-weighted mean so the pooled prevalence
    stays close to :data:`BASE_PREVALENCE`.
    """
    n_sites = weights.size
    log_norm = rng.normal(0.0, 0.2, n_sites)
    log_dis = rng.normal(0.0, 0.35, (n_sites, len(CLASSES) - 1))
    log_norm -= weights @ log_norm
    log_dis -= weights @ log_dis
    profiles = []
    for site in range(n_sites):
        p_norm = float(np.clip(BASE_PREVALENCE["NORM"] * math.exp(log_norm[site]), 0.25, 0.65))
        abnormal = 1.0 - p_norm
        dis = {c: BASE_PREVALENCE[c] * math.exp(log_dis[site, k]) for k, c in enumerate(CLASSES[1:])}
        lift = max(1.0, 1.15 * abnormal / sum(dis.values()))  # keep co-occurrence possible
        prev = {c: min(v * lift, 0.9 * abnormal) for c, v in dis.items()}
        prev["NORM"] = p_norm
        profiles.append((prev, math.exp(rng.normal(0.0, 0.35))))
    return profiles


@dataclass(frozen=True)
class _Visit:
    patient_id: int
    site: int
    age: int
    sex: int
    labels: tuple[str, ...]
    anatomy: Anatomy
    noise_scale: float


def _plan_visits(rng: np.random.Generator, n: int, n_sites: int) -> list[_Visit]:
    """Patients, their sites and labels; about one patient in eight has a second ECG."""
    weights = 1.0 / (1.0 + 0.5 * np.arange(n_sites))  # a few big hospitals, several small
    weights /= weights.sum()
    profiles = _site_profiles(rng, weights)
    visits: list[_Visit] = []
    patient = 0
    while len(visits) < n:
        patient += 1
        site = int(rng.choice(n_sites, p=weights))
        prev, noise = profiles[site]
        labels = sample_labels(rng, prev)
        sex = int(rng.random() < 0.48)
        mean_age = 48.0 if labels == ("NORM",) else 64.0  # disease comes with age
        age = int(np.clip(rng.normal(mean_age, 15.0), 18, 95))
        anatomy = sample_anatomy(rng, age, sex)
        visits.append(_Visit(patient, site, age, sex, labels, anatomy, noise))
        if len(visits) < n and rng.random() < 0.12:
            again = labels if rng.random() < 0.6 else sample_labels(rng, prev)
            visits.append(_Visit(patient, site, age + int(rng.integers(0, 4)), sex, again, anatomy, noise))
    return [visits[i] for i in rng.permutation(n)]


def _assign_folds(rng: np.random.Generator, visits: Sequence[_Visit]) -> dict[int, int]:
    """strat_fold 1..10 per patient, dealt round-robin within label groups (stratified)."""
    first: dict[int, tuple[str, ...]] = {}
    for v in visits:
        first.setdefault(v.patient_id, v.labels)
    groups: dict[tuple[str, ...], list[int]] = {}
    for pid, labels in first.items():
        groups.setdefault(labels, []).append(pid)
    folds, counter = {}, int(rng.integers(10))
    for key in sorted(groups):
        for pid in rng.permutation(groups[key]):
            folds[int(pid)] = counter % 10 + 1
            counter += 1
    return folds


def _record_paths(ecg_id: int) -> tuple[str, str]:
    folder = f"{ecg_id // 1000 * 1000:05d}"
    return (f"records100/{folder}/{ecg_id:05d}_lr", f"records500/{folder}/{ecg_id:05d}_hr")


def _write_wfdb(path: Path, record: SynthRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Format 16 at 1 uV per unit holds +-32 mV; clipping only guards pathological draws.
    p_signal = np.clip(record.signal.astype(np.float64), -32.0, 32.0)
    wfdb.wrsamp(
        path.name,
        fs=record.fs,
        units=["mV"] * len(LEADS),
        sig_name=list(LEADS),
        p_signal=p_signal,
        fmt=["16"] * len(LEADS),
        adc_gain=[_ADC_GAIN] * len(LEADS),
        baseline=[0] * len(LEADS),
        write_dir=str(path.parent),
    )


def _write_annotation(path: Path, ecg_id: int, record: SynthRecord) -> None:
    payload: dict[str, object] = {k: record.waves[k].tolist() for k in WAVE_KEYS}
    payload.update(ecg_id=ecg_id, fs=record.fs, heart_rate=record.heart_rate, labels=list(record.labels))
    path.write_text(json.dumps(payload))


_README = """# Synthetic PTB-XL-style data (LiteHeart)

Generated by `liteheart_core.data.synth.write_synth_ptbxl` (seed {seed}, {n} records, {fs} Hz).
These are SYNTHETIC ECGs from a cardiac-dipole model, not recordings of people. They follow
PTB-XL's layout (`ptbxl_database.csv`, `scp_statements.csv`, WFDB records) so the same reader
loads both; `annotations/NNNNN.json` holds the true wave positions and heart rate per record.
Do not report results on them as clinical results.
"""


def write_synth_ptbxl(
    out_dir: Path, n: int = 500, seed: int = 0, fs: int = 100, seconds: float = 10.0, n_sites: int = 4
) -> dict:
    """Write a synthetic dataset in the PTB-XL layout.

    Parameters
    ----------
    out_dir : Path
        Target folder, created if missing; existing files of the same names are replaced.
    n : int
        Number of records (ecg_id 1..n).
    seed : int
        Seed; the same seed gives byte-identical files.
    fs : int
        100 (``records100/*_lr``) or 500 (``records500/*_hr``), PTB-XL's two rates.
    seconds : float
        Record length in seconds.
    n_sites : int
        Number of sites (hospitals), each with its own class mix and noise level.

    Returns
    -------
    dict
        ``records``, ``patients``, ``label_counts``, ``site_counts``, ``path``, ``seed``,
        ``fs`` and ``seconds``.
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    if fs not in (100, 500):
        raise ValueError(f"fs={fs}: PTB-XL's layout has records at 100 or 500 Hz only")
    if n_sites < 1:
        raise ValueError(f"n_sites={n_sites} must be >= 1")
    out_dir = Path(out_dir)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    cohort_seq, record_seq = np.random.SeedSequence(seed).spawn(2)
    cohort_rng = np.random.default_rng(cohort_seq)
    visits = _plan_visits(cohort_rng, n, n_sites)
    folds = _assign_folds(cohort_rng, visits)
    rows = []
    for ecg_id, (visit, seq) in enumerate(zip(visits, record_seq.spawn(n)), start=1):
        record = generate_record(
            np.random.default_rng(seq), visit.labels, fs, seconds, anatomy=visit.anatomy, noise_scale=visit.noise_scale
        )
        lr, hr = _record_paths(ecg_id)
        _write_wfdb(out_dir / (lr if fs == 100 else hr), record)
        _write_annotation(out_dir / "annotations" / f"{ecg_id:05d}.json", ecg_id, record)
        rows.append(
            {
                "ecg_id": ecg_id,
                "patient_id": visit.patient_id,
                "age": visit.age,
                "sex": visit.sex,
                "site": visit.site,
                "strat_fold": folds[visit.patient_id],
                "scp_codes": str({k: float(v) for k, v in record.scp_codes.items()}),
                "filename_lr": lr,
                "filename_hr": hr,
                "signal_source": "synthetic",
            }
        )
    pd.DataFrame(rows).to_csv(out_dir / "ptbxl_database.csv", index=False)
    (out_dir / "scp_statements.csv").write_text(_SCP_STATEMENTS_CSV)
    (out_dir / "README.md").write_text(_README.format(seed=seed, n=n, fs=fs))
    label_counts = {c: sum(c in v.labels for v in visits) for c in CLASSES}
    site_counts = {s: sum(v.site == s for v in visits) for s in range(n_sites)}
    return {
        "records": n,
        "patients": len(folds),
        "label_counts": label_counts,
        "site_counts": site_counts,
        "path": str(out_dir),
        "seed": seed,
        "fs": fs,
        "seconds": seconds,
    }
