"""Atlas priors: a published group parcellation as the start and spatial prior of the model.

``pavi-parcel fit --prior yeo7|yeo17|PATH`` (config ``model.prior``) turns a group atlas into
per-vertex prior label probabilities on the modelled vertices, as MS-HBM does with priors
trained on a large cohort (Kong et al. 2019). The fit then

- starts from the atlas: group labels = atlas networks, group profiles ``mu_l`` = the normalised
  group-average fingerprint within atlas network ``l`` (no k-means), K = the atlas's K;
- regularises with it: the spatial prior is ``theta_n ~ Dirichlet(a0 * base_n)`` with
  ``base_n`` = the atlas's probabilities at vertex n (instead of network frequencies shared
  by all vertices), so a single subject's labels are pulled towards the atlas where its own
  data are weak, and a cohort's label counts add to the atlas as ``a0`` pseudo-subjects;
- calibrates with it: without subjects with two sessions, the label posteriors cannot be
  calibrated by posterior consistency across sessions; the evidence is then tempered so that
  the atlas predicts it best (:mod:`pavi_parcel.inference.calibration`), which keeps a single
  8-minute run from overruling the atlas on noise;
- keeps its names: network ``l`` of the posterior IS atlas network ``l``, so the export names
  and colours the maps after the atlas, in atlas order, without matching.

Accepted atlases:

- ``yeo7`` / ``yeo17``: the Yeo 2011 networks on fsaverage5 (:func:`pavi_parcel.atlas.references.load_yeo`);
- a hard segmentation (dseg): a GIFTI ``.label.gii`` pair given by its ``hemi-L`` file, or a
  3-D NIfTI, read by :func:`pavi_parcel.atlas.references.load_atlas`. A hard label becomes the soft
  prior ``(1 - floor) * onehot + floor / K`` (``model.prior_floor``): an individual's network
  differs from the atlas's at a fraction of the vertices, and the floor is that allowance;
- a probabilistic segmentation (probseg): a ``.func.gii`` pair (``hemi-L`` file given) with one
  data array per network, or a 4-D NIfTI with one volume per network; for example the group
  ``probseg`` a pavi-parcel fit of a large cohort exported. Rows are used as given (clipped at
  :data:`MIN_PROB`, renormalised); names come from the JSON sidecar's ``LabelMap``, a label
  table (``.tsv``) beside the file, or the GIFTI arrays' ``Name`` (:mod:`pavi_parcel.atlas.files`).

Vertices the atlas leaves unlabelled (medial wall, background, zero rows) get a uniform prior.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.settings.schema import ModelSettings
from pavi_parcel.spaces import Space

from .files import describe_atlas, read_full_atlas
from .naming import atlas_table

log = logging.getLogger(__name__)

DEFAULT_FLOOR = 0.2
"""Default ``model.prior_floor``: the probability a hard atlas leaves to the other networks."""
MIN_PROB = 1e-3
"""Smallest prior probability kept from a probseg (a zero would forbid a network outright)."""
METHODS_WITH_PRIOR = ("pavi_e", "pavi_f", "svi")
"""Fit methods that use an atlas prior (the VB-EM baseline does not)."""


@dataclass(frozen=True)
class AtlasPrior:
    """An atlas as prior label probabilities on the modelled vertices.

    Attributes
    ----------
    probs : ndarray of float64, shape (n_vertices, K)
        Prior probability of each network at each modelled vertex (store row order); rows sum to 1.
    names : list of str
        Network names, atlas order.
    colors : ndarray of uint8, shape (K, 3)
    spec : str
        What was asked for: ``yeo7``, ``yeo17`` or a path.
    kind : {"dseg", "probseg"}
    """

    probs: np.ndarray
    names: list[str]
    colors: np.ndarray
    spec: str
    kind: str

    @property
    def n_networks(self) -> int:
        return len(self.names)

    @property
    def labels(self) -> np.ndarray:
        """Most probable atlas network per vertex, 0..K-1: ndarray of int64, shape (n_vertices,)."""
        return np.asarray(self.probs.argmax(axis=1), dtype=np.int64)


# --------------------------------------------------------------------------- public API
def load_prior(spec: str | Path, space: Space, vertex_index: np.ndarray, floor: float = DEFAULT_FLOOR) -> AtlasPrior:
    """Load an atlas prior onto the modelled vertices.

    Parameters
    ----------
    spec : str or Path
        ``yeo7``, ``yeo17``, a dseg (``*hemi-L*.label.gii`` or 3-D NIfTI) or a probseg
        (``*hemi-L*.func.gii`` or 4-D NIfTI).
    space : Space
        The model's space (``FingerprintStore.space``).
    vertex_index : ndarray of int, shape (n_vertices,)
        Full-space index of each modelled vertex (store row order).
    floor : float
        dseg only: probability spread evenly over the K networks, in [0, 1).

    Returns
    -------
    AtlasPrior

    Raises
    ------
    BadInputError
        Unknown name, missing or unreadable file, an atlas for another space or mesh, a bad floor.
    """
    check_floor(floor)
    atlas = read_full_atlas(spec, space)
    idx = np.asarray(vertex_index, dtype=np.int64)
    k = len(atlas.names)
    if atlas.kind == "dseg":
        labels = atlas.values[idx]
        probs = np.full((idx.size, k), 1.0 / k)
        hit = labels > 0
        probs[hit] = (1.0 - floor) * np.eye(k)[labels[hit] - 1] + floor / k
    else:
        probs = np.clip(np.nan_to_num(atlas.values[idx].astype(np.float64)), 0.0, None)
        empty = probs.sum(1) <= 0
        probs[empty] = 1.0
        probs = np.clip(probs / probs.sum(1, keepdims=True), MIN_PROB, None)
    probs /= probs.sum(1, keepdims=True)
    return AtlasPrior(probs, list(atlas.names), np.asarray(atlas.colors, dtype=np.uint8).reshape(k, 3),
                      str(spec), atlas.kind)


def prior_n_networks(spec: str | Path) -> int:
    """Number of networks of an atlas (reads the file).

    Raises
    ------
    BadInputError
        When the atlas cannot be read.
    """
    return describe_atlas(spec)[0]


def prior_problems(spec: str | Path | None, n_networks: int, space: Space | None, method: str,
                   floor: float = DEFAULT_FLOOR) -> list[BadInputError]:
    """Every problem with an atlas prior that can be seen before the data are read.

    Parameters
    ----------
    spec : str, Path or None
        ``model.prior``; None = no prior, no problem.
    n_networks : int
        ``model.n_networks``; must equal the atlas's K.
    space : Space or None
        The space of the input runs (None when unknown).
    method : str
        ``fit.method``.
    floor : float
        ``model.prior_floor``.

    Returns
    -------
    list of BadInputError
    """
    if spec in (None, "", "null", "None"):
        return []
    errors: list[BadInputError] = []
    if str(method) not in METHODS_WITH_PRIOR:
        errors.append(BadInputError(f"fit.method={method} does not use an atlas prior",
                                    f"one of {', '.join(METHODS_WITH_PRIOR)} with model.prior", str(method),
                                    "set model.prior=null or fit.method=pavi_e"))
    try:
        check_floor(floor)
    except BadInputError as exc:
        errors.append(exc)
    try:
        atlas_k, atlas_surface, atlas_total = describe_atlas(spec, space)
    except BadInputError as exc:
        return errors + [exc]
    surface = None if space is None else space.is_surface
    n_total = None if space is None else space.n_total
    if surface is not None and atlas_surface != surface:
        errors.append(BadInputError(f"Atlas prior {spec} does not fit the input space",
                                    "a surface atlas (yeo7, yeo17, .gii pair)" if surface
                                    else "a volume atlas (.nii/.nii.gz)",
                                    "a surface atlas" if atlas_surface else "a volume atlas",
                                    "pass an atlas in the space of the runs (data.space)"))
    elif surface and n_total is not None and atlas_total != n_total:
        errors.append(BadInputError(f"Atlas prior {spec} has the wrong number of vertices", str(n_total),
                                    str(atlas_total), "resample the atlas to the space of the runs"))
    if int(n_networks) != atlas_k:
        errors.append(BadInputError(f"model.n_networks={n_networks} does not match the atlas prior {spec}",
                                    f"K = {atlas_k} (the atlas's networks)", str(n_networks),
                                    f"set model.n_networks={atlas_k}, or leave it out: model.prior sets K"))
    return errors


def check_floor(floor: float) -> None:
    """``model.prior_floor`` must be in [0, 1)."""
    try:
        ok = 0.0 <= float(floor) < 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise BadInputError("Invalid model.prior_floor", "a probability in [0, 1)", repr(floor),
                            f"set model.prior_floor={DEFAULT_FLOOR}")


def initial_profiles(xbar: np.ndarray, probs: np.ndarray, min_vertices: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Group labels and profiles from an atlas prior instead of k-means.

    Parameters
    ----------
    xbar : ndarray of shape (N, D)
        Group-averaged fingerprints (unit rows).
    probs : ndarray of shape (N, K)
        Atlas prior probabilities.
    min_vertices : int
        A network with fewer hard-labelled vertices takes its profile from the prior-weighted
        average over all vertices instead.

    Returns
    -------
    labels : ndarray of int64, shape (N,)
        Atlas argmax, 0..K-1 (atlas order).
    mu : ndarray of float32, shape (K, D)
        Normalised average fingerprint within each atlas network.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = probs.argmax(1)
    k = probs.shape[1]
    onehot = np.eye(k)[labels]
    small = onehot.sum(0) < min_vertices
    weights = np.where(small[None, :], probs, onehot)
    mu = weights.T @ np.asarray(xbar, dtype=np.float64)
    norm = np.linalg.norm(mu, axis=1, keepdims=True)
    mu = np.divide(mu, norm, out=np.zeros_like(mu), where=norm > 0)
    return labels.astype(np.int64), mu.astype(np.float32)


def fitted_prior(settings: dict | None) -> str | None:
    """The ``model.prior`` a posterior was fitted with (from its saved settings), or None."""
    model = (settings or {}).get("model") if isinstance(settings, dict) else None
    spec = model.get("prior") if isinstance(model, dict) else None
    return None if spec in (None, "", "null", "None") else str(spec)


def prior_for_store(model: ModelSettings, store) -> AtlasPrior | None:
    """The atlas prior of a fit (``model.prior``) on a fingerprint store's vertices, or None.

    Parameters
    ----------
    model : ModelSettings
        ``prior``, ``prior_floor``, ``n_networks``.
    store : FingerprintStore

    Raises
    ------
    BadInputError
        An unusable atlas, or ``n_networks`` different from the atlas's K.
    """
    spec = model.atlas_prior
    if spec is None:
        return None
    atlas = load_prior(spec, store.space, store.vertex_index, model.prior_floor)
    k = model.n_networks
    if atlas.n_networks != k:
        raise BadInputError(f"model.n_networks={k} does not match the atlas prior {spec}",
                            f"K = {atlas.n_networks} (the atlas's networks)", str(k),
                            f"set model.n_networks={atlas.n_networks}, or leave it out: model.prior sets K")
    return atlas


# --------------------------------------------------------------------------- naming at export
def prior_label_table(posterior, group_labels: np.ndarray):
    """Label table of a posterior fitted with an atlas prior, or None without one.

    The networks are the atlas's, in atlas order (see
    :func:`pavi_parcel.atlas.naming.atlas_table`). When the atlas can no longer be read (a
    moved file), the default table is used and a warning logged.

    Parameters
    ----------
    posterior : Posterior
        ``attrs["settings"]["model"]["prior"]`` names the atlas.
    group_labels : ndarray of int, shape (n_vertices,)
        Group hard map, posterior order 0..K-1.

    Returns
    -------
    LabelTable or None
    """
    spec = fitted_prior(posterior.attrs.get("settings"))
    if spec is None:
        return None
    try:
        atlas = load_prior(spec, posterior.space, posterior.vertex_index, floor=0.0)
    except BadInputError as exc:
        log.warning("Cannot name the networks after the atlas prior (%s); using generic names", exc)
        return None
    if atlas.n_networks != posterior.n_networks:
        log.warning("Atlas prior %s has %d networks, the posterior %d; using generic names", spec,
                    atlas.n_networks, posterior.n_networks)
        return None
    labelled = atlas.probs.max(1) > 1.0 / atlas.n_networks + 1e-9  # uniform rows: the atlas says nothing
    return atlas_table(group_labels, np.where(labelled, atlas.labels + 1, 0), atlas.names, atlas.colors, spec)
