"""The files of a simulated fMRIPrep run: confounds TSV + JSON, GIFTI, CIFTI or NIfTI BOLD + sidecars.

Names and contents follow fMRIPrep's derivatives (``*_desc-confounds_timeseries.tsv``,
``*_hemi-L_space-fsaverage5_bold.func.gii``, ``*_space-fsLR_den-91k_bold.dtseries.nii``,
``*_space-MNI..._desc-preproc_bold.nii.gz``); every file is written atomically.

A simulated CIFTI run holds the 91,282 grayordinates of the 91k set: the 59,412 cortical
vertices of the standard fsLR lists (zero on the few the Yeo atlas leaves unlabelled), then the
31,870 subcortical voxels in HCP's structure order and counts, placed in a ball at the centre of
the MNI 2 mm grid (not anatomical: the model does not read them) and filled with noise.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.spaces import cifti
from pavi_parcel.spaces.fslr import FSLR_VERTICES, standard_cortex

from .geometry import SimSpace


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


def write_run(stem: Path, sim: SimSpace, data: np.ndarray, tr: float, resolution_mm: int,
              compress: bool) -> list[Path]:
    """Write one run's BOLD files in the format of the simulation space."""
    if sim.info.file_kind == "GIFTI":
        return write_surface_run(stem, sim, data, tr, compress)
    if sim.info.file_kind == "CIFTI":
        return write_cifti_run(stem, sim, data, tr)
    return write_volume_run(stem, sim, data, tr, resolution_mm, write_mask=True)


def write_cifti_run(stem: Path, sim: SimSpace, data: np.ndarray, tr: float) -> list[Path]:
    """Write a 91k dense time series: cortex from ``data``, subcortex noise."""
    full = np.zeros((data.shape[0], sim.info.n_total), dtype=np.float32)
    full[:, sim.valid] = data
    cortex = standard_cortex()
    columns = np.concatenate([h.start + cortex[h.label] for h in sim.info.hemispheres])
    models, n_sub = grayordinates_91k()
    noise = np.random.default_rng(int(columns.size)).standard_normal((data.shape[0], n_sub), dtype=np.float32)
    path = stem.with_name(f"{stem.name}_space-{sim.info.name}_den-91k_bold.dtseries.nii")
    cifti.series(np.concatenate([full[:, columns], noise], axis=1), tr, models, path)
    write_json(path.with_name(path.name.replace(".dtseries.nii", ".json")),
               {"RepetitionTime": tr, "TaskName": "rest", "StartTime": 0.0})
    return [path]


SUBCORTEX = (("ACCUMBENS_LEFT", 135), ("ACCUMBENS_RIGHT", 140), ("AMYGDALA_LEFT", 315), ("AMYGDALA_RIGHT", 332),
             ("BRAIN_STEM", 3472), ("CAUDATE_LEFT", 728), ("CAUDATE_RIGHT", 755), ("CEREBELLUM_LEFT", 8709),
             ("CEREBELLUM_RIGHT", 9144), ("DIENCEPHALON_VENTRAL_LEFT", 706), ("DIENCEPHALON_VENTRAL_RIGHT", 712),
             ("HIPPOCAMPUS_LEFT", 764), ("HIPPOCAMPUS_RIGHT", 795), ("PALLIDUM_LEFT", 297), ("PALLIDUM_RIGHT", 260),
             ("PUTAMEN_LEFT", 1060), ("PUTAMEN_RIGHT", 1010), ("THALAMUS_LEFT", 1288), ("THALAMUS_RIGHT", 1248))
"""The subcortical structures of the 91k grayordinates and their voxel counts (31,870 in all)."""
MNI_2MM = (np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]]), (91, 109, 91))


@lru_cache(maxsize=1)
def grayordinates_91k() -> tuple[nib.cifti2.BrainModelAxis, int]:
    """The brain-model axis of a simulated 91k run and its number of subcortical voxels."""
    affine, shape = MNI_2MM
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).reshape(-1, 3)
    order = np.argsort(np.linalg.norm(ijk - np.asarray(shape) / 2, axis=1), kind="stable")
    models, start = cifti.cortex_axis(standard_cortex(), FSLR_VERTICES), 0
    for name, count in SUBCORTEX:
        mask = np.zeros(shape, dtype=bool)
        mask[tuple(ijk[order[start:start + count]].T)] = True
        models = models + nib.cifti2.BrainModelAxis.from_mask(mask, f"CIFTI_STRUCTURE_{name}", affine)
        start += count
    return models, start


def write_volume_run(stem: Path, sim: SimSpace, data: np.ndarray, tr: float, resolution_mm: int,
                     write_mask: bool) -> list[Path]:
    """Write the NIfTI BOLD series (zeros outside the mask) and the brain mask."""
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


__all__ = ["SUBCORTEX", "grayordinates_91k", "write_cifti_run", "write_confounds", "write_json", "write_run",
           "write_surface_run", "write_volume_run"]
