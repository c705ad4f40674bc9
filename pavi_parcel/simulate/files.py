"""The files of a simulated fMRIPrep run: confounds TSV + JSON, GIFTI or NIfTI BOLD + sidecars.

Names and contents follow fMRIPrep's derivatives (``*_desc-confounds_timeseries.tsv``,
``*_hemi-L_space-fsaverage5_bold.func.gii``, ``*_space-MNI..._desc-preproc_bold.nii.gz``); every
file is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pavi_parcel.io.atomic import atomic_write

from .layout import SimSpace


def write_json(path: Path, payload: dict) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")


def write_confounds(stem: Path, table: pd.DataFrame, meta: dict) -> Path:
    """Write ``<stem>_desc-confounds_timeseries.tsv`` and its ``.json``; return the TSV path."""
    tsv = stem.with_name(stem.name + "_desc-confounds_timeseries.tsv")
    with atomic_write(tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.8g")
    write_json(tsv.with_suffix(".json"), meta)
    return tsv


def write_surface_run(stem: Path, sim: SimSpace, data: np.ndarray, tr: float, compress: bool) -> list[Path]:
    """Write both hemispheres of the surface space as fMRIPrep GIFTI time series (one array per volume)."""
    import nibabel as nib
    from nibabel.gifti import GiftiDataArray, GiftiImage, GiftiMetaData

    full = np.zeros((data.shape[0], sim.info.n_total), dtype=np.float32)
    full[:, sim.valid] = data
    encoding = "GIFTI_ENCODING_B64GZ" if compress else "GIFTI_ENCODING_B64BIN"
    paths = []
    for hemi in sim.info.hemispheres:
        structure = hemi.structure
        path = stem.with_name(f"{stem.name}_hemi-{hemi.label}_space-{sim.info.name}_bold.func.gii")
        block = full[:, hemi.rows]
        arrays = [GiftiDataArray(np.ascontiguousarray(frame), intent="NIFTI_INTENT_TIME_SERIES",
                                 datatype="NIFTI_TYPE_FLOAT32", encoding=encoding,
                                 meta=GiftiMetaData({"TimeStep": f"{1000.0 * tr:.6f}"})) for frame in block]
        img = GiftiImage(darrays=arrays, meta=GiftiMetaData({"AnatomicalStructurePrimary": structure}))
        with atomic_write(path) as tmp:
            nib.save(img, str(tmp))
        write_json(path.with_name(path.name.replace(".func.gii", ".json")),
                   {"RepetitionTime": tr, "TaskName": "rest", "StartTime": 0.0})
        paths.append(path)
    return paths


def write_volume_run(stem: Path, sim: SimSpace, data: np.ndarray, tr: float, resolution_mm: int,
                     write_mask: bool) -> list[Path]:
    """Write the NIfTI BOLD series (zeros outside the mask) and the brain mask."""
    import nibabel as nib

    shape = sim.info.grid_shape
    prefix = f"{stem.name}_space-{sim.info.name}_res-{resolution_mm}"
    full = np.zeros((int(np.prod(shape)), data.shape[0]), dtype=np.float32)
    full[sim.valid] = data.T
    img = nib.Nifti1Image(full.reshape(shape + (data.shape[0],)), sim.info.affine)
    img.header.set_zooms(tuple(float(z) for z in img.header.get_zooms()[:3]) + (tr,))
    img.header.set_xyzt_units("mm", "sec")
    bold = stem.with_name(f"{prefix}_desc-preproc_bold.nii.gz")
    with atomic_write(bold) as tmp:
        nib.save(img, str(tmp))
    write_json(bold.with_name(bold.name.replace(".nii.gz", ".json")),
               {"RepetitionTime": tr, "TaskName": "rest", "SkullStripped": True, "StartTime": 0.0})
    paths = [bold]
    if write_mask:
        mask = np.zeros(int(np.prod(shape)), dtype=np.uint8)
        mask[sim.valid] = 1
        path = stem.with_name(f"{prefix}_desc-brain_mask.nii.gz")
        with atomic_write(path) as tmp:
            nib.save(nib.Nifti1Image(mask.reshape(shape), sim.info.affine), str(tmp))
        paths.append(path)
    return paths


__all__ = ["write_confounds", "write_json", "write_surface_run", "write_volume_run"]
