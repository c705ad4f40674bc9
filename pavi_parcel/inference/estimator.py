"""The Python API of the model: :class:`PaviParcellation`, an estimator in the scikit-learn style.

::

    from pavi_parcel import PaviParcellation
    est = PaviParcellation(n_networks=17, method="pavi_e", random_state=0)   # any model.* / fit.* setting
    est.fit("OUT_DIR/work/fingerprints.h5")          # a fingerprint store (path or open store)
    est.subject_probs_                               # (n_subjects, n_vertices, K), store vertex order
    est.transform("NEW/work/fingerprints.h5")        # new subjects, no refit: (n_new, n_vertices, K)
    est.save("model_dir"); PaviParcellation.load("model_dir")

Parameters are the settings of ``model.*`` and ``fit.*`` (:class:`~pavi_parcel.settings.schema.ModelSettings`,
:class:`~pavi_parcel.settings.schema.FitSettings`) by their names, plus ``random_state`` (the seed)
and ``device``; they are stored as given and checked by :meth:`fit` (every problem at once, as a
:class:`~pavi_parcel.exceptions.BadInputErrors`, which is a ``ValueError``). Fitted attributes end
in ``_``.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pavi_parcel.exceptions import BadInputError, BadInputErrors
from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.model.new_subjects import infer_subjects
from pavi_parcel.settings.rules import collect
from pavi_parcel.settings.schema import FIT_PRESETS, FitSettings, ModelSettings
from pavi_parcel.stores.fingerprints import FingerprintStore
from pavi_parcel.stores.posterior import read_posterior

from .fitted_run import load_model_state
from .resources import plan_fit
from .result import FitResult
from .smoothing import potts_neighbours
from .training import fit_store

MODEL_PARAMS = tuple(f.name for f in fields(ModelSettings))
FIT_PARAMS = tuple(f.name for f in fields(FitSettings))
ESTIMATOR_FILE = "estimator.json"


def _defaults() -> dict[str, Any]:
    return {**ModelSettings().to_dict(), **FitSettings().to_dict(), "random_state": 0, "device": "auto"}


class PaviParcellation:
    """Individual probabilistic parcellations of a cohort's fingerprints with plate-amortized VI.

    Parameters
    ----------
    n_networks : int, default 17
        K, the number of networks (``model.n_networks``).
    method : {"pavi_e", "pavi_f", "svi", "vbem"}, default "pavi_e"
        Inference method (``fit.method``); the method's preset applies (VB-EM's ``tol=1e-6``).
    random_state : int, default 0
        The one seed of initialisation and minibatch draws.
    device : str, default "auto"
        ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
    **settings
        Any other ``model.*`` or ``fit.*`` setting by name: ``potts_beta=0.5``, ``max_minutes=10``,
        ``batch_subjects=8``, ``prior="yeo17"`` ...

    Attributes
    ----------
    subjects_ : list of str
        Participant labels, in the order of the arrays below.
    sessions_ : list of str
    subject_probs_ : ndarray of float32, shape (n_subjects, n_vertices, K)
        q(y_{s,n} = l), store vertex order, networks in the fitted (group) order.
    group_probs_ : ndarray of float32, shape (n_vertices, K)
        The group atlas (posterior predictive of a new subject).
    group_profiles_ : ndarray of float32, shape (K, D)
        Group network profiles mu_l.
    vertex_index_ : ndarray of int64, shape (n_vertices,)
        Positions of the vertices in the space's full vertex array (fsaverage5: 0..20,483, left
        then right; volumes: flat C-order voxel index).
    space_ : Space
    elbo_ : list of dict
        The ELBO log (step, seconds, elbo and its terms).
    model_state_ : dict
        The trained encoders and group model (what :meth:`transform` applies).
    """

    def __init__(self, n_networks: int = 17, method: str = "pavi_e", random_state: int = 0, device: str = "auto",
                 **settings: Any):
        unknown = sorted(set(settings) - set(MODEL_PARAMS) - set(FIT_PARAMS))
        if unknown:
            raise BadInputError(f"Unknown setting {', '.join(unknown)} of PaviParcellation",
                                "names of model.* or fit.* settings (conf/model/mshbm.yaml, conf/fit/*.yaml)",
                                ", ".join(unknown), "check the spelling (see PaviParcellation().get_params())")
        self.n_networks, self.method, self.random_state, self.device = n_networks, method, random_state, device
        preset = FIT_PRESETS.get(method, {}) if isinstance(method, str) else {}
        for name, default in _defaults().items():
            if name not in ("n_networks", "method", "random_state", "device"):
                setattr(self, name, settings.get(name, preset.get(name, default)))

    # ------------------------------------------------------------------ scikit-learn conventions
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Every parameter and its value (scikit-learn convention)."""
        return {name: getattr(self, name) for name in _defaults()}

    def set_params(self, **params: Any) -> PaviParcellation:
        """Set parameters by name; returns the estimator (scikit-learn convention)."""
        unknown = sorted(set(params) - set(_defaults()))
        if unknown:
            raise BadInputError(f"Unknown parameter {', '.join(unknown)} of PaviParcellation",
                                "a name of get_params()", ", ".join(unknown), "check the spelling")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = _defaults()
        defaults.update(FIT_PRESETS.get(self.method, {}) if isinstance(self.method, str) else {})
        changed = {k: v for k, v in self.get_params().items() if v != defaults.get(k) or k in ("n_networks", "method")}
        return f"PaviParcellation({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def settings(self) -> tuple[ModelSettings, FitSettings]:
        """The checked model and fit settings of the parameters.

        Raises
        ------
        BadInputErrors
            Every invalid parameter, named by its setting.
        """
        params = self.get_params()
        model, model_problems = collect(ModelSettings, {k: params[k] for k in MODEL_PARAMS})
        fit, fit_problems = collect(FitSettings, {k: params[k] for k in FIT_PARAMS})
        if model_problems or fit_problems:
            raise BadInputErrors(model_problems + fit_problems)
        return model, fit

    # ------------------------------------------------------------------ fitting
    def fit(self, fingerprints: str | Path | FingerprintStore, y: None = None,
            checkpoint_dir: str | Path | None = None) -> PaviParcellation:
        """Fit the model to a cohort's fingerprint store.

        Parameters
        ----------
        fingerprints : str, Path or FingerprintStore
            ``OUT_DIR/work/fingerprints.h5`` of a pipeline run, or an open store.
        y : None
            Unused (scikit-learn signature).
        checkpoint_dir : str or Path, optional
            A folder for ``checkpoint.pt`` and ``elbo.tsv``: an interrupted fit resumes from it.

        Returns
        -------
        PaviParcellation
            ``self``, fitted.
        """
        model, fit = self.settings()
        with _opened(fingerprints) as store:
            fit = plan_fit(store.path, model, fit, device=str(self.device))
            folder = None if checkpoint_dir is None else Path(checkpoint_dir)
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
            result = fit_store(store, model, fit, int(self.random_state), str(self.device), folder)
        self._set_fitted(result)
        return self

    def fit_transform(self, fingerprints: str | Path | FingerprintStore, y: None = None) -> np.ndarray:
        """Fit, then return :attr:`subject_probs_`."""
        return self.fit(fingerprints).subject_probs_

    def transform(self, fingerprints: str | Path | FingerprintStore, refine_steps: int | None = None) -> np.ndarray:
        """Label probabilities of new subjects, without refitting.

        Parameters
        ----------
        fingerprints : str, Path or FingerprintStore
            A store on the fitted vertices and seeds (``pavi-parcel apply`` writes one per subject).
        refine_steps : int, optional
            Encoder refinement passes; ``fit.refine_steps`` by default.

        Returns
        -------
        ndarray of float32, shape (n_new, n_vertices, K)
        """
        self._check_fitted()
        with _opened(fingerprints) as store:
            smooth = float(self.model_state_.get("potts_beta") or 0) > 0
            neighbours = potts_neighbours(store, torch.device("cpu")) if smooth else None
            return infer_subjects(self.model_state_, store, refine_steps, neighbours)

    def _set_fitted(self, result: FitResult) -> None:
        post = result.posterior
        self.result_ = result
        self.subjects_, self.sessions_ = list(post.subjects), list(post.sessions)
        self.subject_probs_ = np.asarray(post.subject_probs)
        self.group_probs_ = np.asarray(post.group_probs)
        self.group_profiles_ = np.asarray(post.group_profiles)
        self.vertex_index_ = np.asarray(post.vertex_index, dtype=np.int64)
        self.space_ = post.space
        self.elbo_ = list(result.elbo)
        self.model_state_ = result.model_state

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_state_"):
            raise BadInputError("PaviParcellation is not fitted", "a fitted estimator", "no fit yet",
                                "call fit(fingerprints) or PaviParcellation.load(model_dir) first")

    # ------------------------------------------------------------------ persistence
    def save(self, model_dir: str | Path) -> Path:
        """Write ``posterior.h5``, ``model_state.pt`` and the parameters (``estimator.json``) to ``model_dir``."""
        self._check_fitted()
        model_dir = Path(model_dir)
        self.result_.save(model_dir)
        with atomic_write(model_dir / ESTIMATOR_FILE) as tmp:
            tmp.write_text(json.dumps({"params": self.get_params(), "elbo": self.elbo_}, indent=1) + "\n")
        return model_dir

    @classmethod
    def load(cls, model_dir: str | Path) -> PaviParcellation:
        """A fitted estimator from :meth:`save`'s folder, or from the ``model/`` folder of a pipeline run."""
        model_dir = Path(model_dir)
        needed = [model_dir / "posterior.h5", model_dir / "model_state.pt"]
        if not all(p.is_file() for p in needed):
            raise BadInputError(f"{model_dir} holds no fitted model", "posterior.h5 and model_state.pt",
                                "missing files", "pass the folder given to save() or a run's OUT_DIR/model")
        saved = model_dir / ESTIMATOR_FILE
        if saved.is_file():
            meta = json.loads(saved.read_text())
            params, elbo = meta["params"], meta.get("elbo", [])
        else:  # a pipeline run: the settings are in the posterior
            post_settings = read_posterior(needed[0], subjects=False).attrs.get("settings", {})
            params = {**post_settings.get("model", {}), **post_settings.get("fit", {})}
            elbo = []
        known = set(_defaults())
        est = cls(**{k: v for k, v in params.items() if k in known})
        posterior = read_posterior(needed[0])
        est._set_fitted(FitResult(posterior, load_model_state(needed[1]), elbo))
        return est


class _opened:
    """Context manager: a store from a path (closed on exit) or an open store (left open)."""

    def __init__(self, fingerprints: str | Path | FingerprintStore):
        self.given = fingerprints
        self.store: FingerprintStore | None = None

    def __enter__(self) -> FingerprintStore:
        if isinstance(self.given, FingerprintStore):
            return self.given
        self.store = FingerprintStore(Path(self.given))
        return self.store

    def __exit__(self, *exc: object) -> None:
        if self.store is not None:
            self.store.close()


__all__ = ["PaviParcellation"]
