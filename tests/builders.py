"""Builders of tiny fMRIPrep-like datasets, file by file, shared by the discovery, ingest and reliability tests."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from pavi_parcel.bids.entities import build_name
from pavi_parcel.simulate.files import grayordinates_91k
from pavi_parcel.spaces import cifti
from pavi_parcel.spaces.fslr import FSLR_VERTICES, standard_cortex

MNI = "MNI152NLin2009cAsym"
#: A small gradient fit: two subjects per batch, patches of 48 vertices, 40 steps at most.
SMALL_FIT = {"batch_subjects": 2, "batch_vertices": 48, "max_steps": 40, "lr": 0.05, "tol": 1e-5,
             "checkpoint_every": 5, "min_epochs": 3}


def func_dir(root: Path, sub: str, ses: str | None = None) -> Path:
    folder = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "func"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def describe(root: Path, derivative: bool = True) -> None:
    root.mkdir(parents=True, exist_ok=True)
    desc = {"Name": "tiny", "BIDSVersion": "1.9.0"}
    if derivative:
        desc |= {"DatasetType": "derivative", "GeneratedBy": [{"Name": "fMRIPrep"}]}
    (root / "dataset_description.json").write_text(json.dumps(desc))


def write_gifti(path: Path, data: np.ndarray, timestep_ms: float | None = 2000.0) -> Path:
    """One data array per frame, as fMRIPrep writes them; data has shape (n_vertices, n_frames)."""
    meta = nib.gifti.GiftiMetaData({"TimeStep": f"{timestep_ms:f}"}) if timestep_ms is not None else None
    arrays = [nib.gifti.GiftiDataArray(np.ascontiguousarray(data[:, t], dtype=np.float32),
                                       intent="NIFTI_INTENT_TIME_SERIES", datatype="NIFTI_TYPE_FLOAT32", meta=meta)
              for t in range(data.shape[1])]
    nib.save(nib.gifti.GiftiImage(darrays=arrays), str(path))
    return path


def surface_names(ents: dict, space: str = "fsaverage5", order: str = "new") -> dict[str, str]:
    names = {}
    for hemi in "LR":
        if order == "new":
            names[hemi] = build_name({**ents, "hemi": hemi, "space": space}, "bold", ".func.gii")
        else:
            names[hemi] = build_name({**ents, "space": space, "hemi": hemi}, "", ".func.gii")
    return names


def write_surface_run(folder: Path, ents: dict, left: np.ndarray, right: np.ndarray, *, space="fsaverage5",
                      order="new", timestep_ms: float | None = 2000.0,
                      sidecar_tr: float | None = 2.0) -> tuple[Path, Path]:
    names = surface_names(ents, space, order)
    paths = (write_gifti(folder / names["L"], left, timestep_ms), write_gifti(folder / names["R"], right, timestep_ms))
    if sidecar_tr is not None:
        for p in paths:
            p.with_name(p.name.split(".", 1)[0] + ".json").write_text(json.dumps({"RepetitionTime": sidecar_tr}))
    return paths


def write_volume_run(folder: Path, ents: dict, data: np.ndarray, mask: np.ndarray | None = None, *, space=MNI,
                     res: str | None = None, affine: np.ndarray | None = None, tr: float = 2.0,
                     units: str = "sec", sidecar_tr: float | None = 2.0, mask_affine=None) -> tuple[Path, Path]:
    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    base = {**ents, "space": space, **({"res": res} if res else {})}
    bold = folder / build_name({**base, "desc": "preproc"}, "bold", ".nii.gz")
    img = nib.Nifti1Image(data.astype(np.float32), affine)
    if data.ndim == 4:
        img.header.set_zooms((2.0, 2.0, 2.0, tr))
    img.header.set_xyzt_units("mm", units)
    nib.save(img, str(bold))
    mask = np.ones(data.shape[:3], dtype=np.uint8) if mask is None else mask.astype(np.uint8)
    mask_path = folder / build_name({**base, "desc": "brain"}, "mask", ".nii.gz")
    nib.save(nib.Nifti1Image(mask, affine if mask_affine is None else mask_affine), str(mask_path))
    if sidecar_tr is not None:
        bold.with_name(bold.name.split(".", 1)[0] + ".json").write_text(json.dumps({"RepetitionTime": sidecar_tr}))
    return bold, mask_path


def write_cifti_run(folder: Path, ents: dict, n_frames: int = 30, *, space: str = "fsLR", den: str = "91k",
                    structures: str = "LR", subcortex: bool = True, kind: str = "dtseries", unit: str = "SECOND",
                    step: float = 2.0, n_hemi: int = FSLR_VERTICES, seed: int = 0, desc: str | None = None,
                    sidecar_tr: float | None = 2.0) -> Path:
    """A dense CIFTI-2 run named as fMRIPrep (``desc=None``) or XCP-D (``desc="denoised"``) name theirs.

    The grayordinates are the standard 91k ones (59,412 cortical vertices, 31,870 subcortical
    voxels) unless ``structures`` leaves a cortex out, ``subcortex`` is False or ``n_hemi`` is not
    the fsLR 32k mesh's; ``kind`` ``dscalar`` / ``dlabel`` writes such a file under the dtseries name.
    """
    rng = np.random.default_rng(seed)
    cortex = standard_cortex()
    models = None
    for hemi in structures:
        vertices = cortex[hemi][cortex[hemi] < n_hemi]
        part = nib.cifti2.BrainModelAxis.from_surface(vertices, n_hemi, "CortexLeft" if hemi == "L" else "CortexRight")
        models = part if models is None else models + part
    if subcortex:
        full, n_sub = grayordinates_91k()
        sub = full[full.surface_mask.sum():]
        models = sub if models is None else models + sub
    data = rng.standard_normal((n_frames, len(models))).astype(np.float32) + 100
    base = {**ents, "space": space, **({"den": den} if den else {}), **({"desc": desc} if desc else {})}
    path = folder / build_name(base, "bold", ".dtseries.nii")
    if kind == "dtseries":
        axis = nib.cifti2.SeriesAxis(start=0.0, step=step, size=n_frames, unit=unit)
    elif kind == "dscalar":
        axis = nib.cifti2.ScalarAxis([f"map{i}" for i in range(n_frames)])
    else:
        axis = nib.cifti2.LabelAxis(["labels"], [{0: ("???", (0, 0, 0, 0)), 1: ("a", (1, 0, 0, 1))}])
        data = (data[:1] > 100).astype(np.float32)
    cifti.save_cifti(data, (axis, models), kind, path)
    if sidecar_tr is not None:
        path.with_name(path.name.split(".", 1)[0] + ".json").write_text(json.dumps({"RepetitionTime": sidecar_tr}))
    return path


def make_confounds(n_frames: int, rng: np.random.Generator, motion: np.ndarray | None = None,
                   fd: np.ndarray | None = None, n_nonsteady: int = 0) -> pd.DataFrame:
    """An fMRIPrep-like table: 24 motion terms, wm/csf/global, FD, std DVARS, cosines, outliers."""
    table = {}
    base = np.cumsum(rng.standard_normal((n_frames, 6)), axis=0) * 0.02  # slow drifts, like head motion
    if motion is not None:
        base[:, 0] = motion
    for j, name in enumerate(["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]):
        x = base[:, j]
        d = np.r_[np.nan, np.diff(x)]
        table |= {name: x, f"{name}_derivative1": d, f"{name}_power2": x**2, f"{name}_derivative1_power2": d**2}
    for name in ("white_matter", "csf", "global_signal"):
        x = rng.standard_normal(n_frames)
        d = np.r_[np.nan, np.diff(x)]
        table |= {name: x, f"{name}_derivative1": d, f"{name}_power2": x**2, f"{name}_derivative1_power2": d**2}
    fd = np.abs(rng.standard_normal(n_frames)) * 0.05 if fd is None else np.asarray(fd, dtype=float)
    table["framewise_displacement"] = np.r_[np.nan, fd[1:]]
    table["std_dvars"] = np.r_[np.nan, np.full(n_frames - 1, 1.0)]
    times = np.arange(n_frames)
    for k in range(1, 3):
        table[f"cosine{k - 1:02d}"] = np.sqrt(2.0 / n_frames) * np.cos(np.pi * (times + 0.5) * k / n_frames)
    for k in range(n_nonsteady):
        col = np.zeros(n_frames)
        col[k] = 1
        table[f"non_steady_state_outlier{k:02d}"] = col
    return pd.DataFrame(table)


def write_confounds(folder: Path, ents: dict, table: pd.DataFrame, old: bool = False) -> Path:
    path = folder / build_name({**ents, "desc": "confounds"}, "regressors" if old else "timeseries", ".tsv")
    table.to_csv(path, sep="\t", index=False, na_rep="n/a")
    return path


def tiny_surface(n_vertices: int = 642, n_frames: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_vertices, n_frames)).astype(np.float32),
            rng.standard_normal((n_vertices, n_frames)).astype(np.float32))
