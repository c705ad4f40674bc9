"""The ``README.md`` of an OUT_DIR: what the derivative holds, its conventions, and what the BIDS validator says."""

from __future__ import annotations

from pavi_parcel.spaces import Space

README = """\
# pavi-parcel: individual probabilistic functional parcellations

Made by pavi-parcel {version} from `{source}`: K = {k} networks in space `{space}`, fitted with
a hierarchical Bayesian model (population, subject, session, vertex) by plate-amortized
variational inference. The resolved settings of the run are in `model/config.yaml`.

## Layout

- `sub-<label>/anat/`: each subject's maps, from all of its runs (so without task, session or run
  entities; segmentations live in `anat/` in BIDS):
  - `*_seg-pavi{k}_probseg.*`: the posterior probability of each network, one map per network
    ({maps}), in the order of the label table (map i, counted from 0, holds label i + 1);
  - `*_seg-pavi{k}_dseg.*`: the most probable network (0 outside the model);
  - `*_seg-pavi{k}_stat-entropy_statmap.*`: posterior entropy / log K (0 certain, 1 uniform).
- `sub-<label>/[ses-<label>/]func/` (`pavi-parcel connectome`), named as XCP-D names its outputs:
  - `<run>_*_seg-pavi{k}_stat-mean_timeseries.tsv`: each run's network time series (the cleaned
    vertex time series averaged with the subject's map as weights), a column per network;
  - `<run>_*_stat-pearsoncorrelation_relmat.tsv`: their correlations (first column `Node`);
  - `sub-<label>_*_stat-pearsoncorrelation_relmat.tsv` and `..._stat-partialcorrelation_relmat.tsv`:
    the subject's connectomes over all of its runs, the partial correlations sparse, with a
    population prior (group-sparse covariance: one edge set for the cohort);
  - rows and columns in the label table's order, named after the networks.
- `seg-pavi{k}_dseg.tsv` (and `.json`): the label table shared by every map: index, name, colour,
  the network's index in `model/posterior.h5`, and its Dice with the reference it was named after.
- `group/`: the group atlas (same names without `sub-<label>_`).
- `qc/runs.tsv` (and `.json`): one row per input run: frames kept, mean framewise displacement,
  temporal SNR, valid vertices per hemisphere, and whether it was included (and why not).
- `model/`: the fitted posterior (`posterior.h5`), model state, ELBO trace and `config.yaml`;
  `model/connectome/`: the population graph (`seg-pavi{k}_graph.tsv`, one row per edge) and the
  mean connectomes.
- `report.html`: figures of the maps, the fit and the QC.
- `work/`: intermediate stores (cleaned time series, fingerprints), reused by reruns.

## BIDS validity

`bids-validator` reports no error on this folder. BIDS has no file rule for soft maps on
surfaces (`*_probseg.func.gii`, `*_probseg.dscalar.nii`) or for uncertainty maps
(`*_statmap.*`), connectivity matrices and time series (`*_relmat.tsv`, `*_timeseries.tsv`,
as XCP-D writes them), nor for `model/`, `group/`, `qc/`, `work/` and the report: `.bidsignore` lists
them, and they keep the conventions above. Warnings it may still give, and why:

- `SIDECAR_KEY_RECOMMENDED` (`Description`, `SpatialReference`) on `seg-pavi{k}_dseg.tsv`: the
  table is shared by every space and hemisphere, so it names none; its JSON defines only its
  extra columns, since a `Description` there would be inherited by (and clash with) every map's.
- `SIDECAR_KEY_RECOMMENDED` (`SpatialReference`) on volume maps: their `space-` entity names a
  standard template, and the grid is the fMRIPrep output grid of the runs.
- `NIFTI_UNIT` on 4-D volume soft maps: their fourth dimension is the networks, not time, so it
  has no time unit.
- `TOO_FEW_AUTHORS` / missing `Authors`: a derivative's authors are the people who ran it; add
  them to `dataset_description.json` before sharing.
"""

MAP_FORMATS = {"gifti": "one GIFTI data array per network and hemisphere",
               "cifti": "one CIFTI dscalar map per network, named after it",
               "nifti": "one volume of a 4-D NIfTI per network"}


def derivative_readme(space: Space, n_networks: int, version: str, source: str) -> str:
    """The text of ``OUT_DIR/README.md`` for a run in ``space`` with K = ``n_networks``."""
    maps = MAP_FORMATS.get(space.map_format, space.map_format)
    return README.format(version=version, source=source, k=n_networks, space=space.name, maps=maps)


__all__ = ["derivative_readme"]
