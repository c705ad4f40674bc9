"""Training loop: plate subsampling, streaming, device, ELBO log, checkpoints, resume, posteriors.

:func:`fit_model` fits the MS-HBM to a fingerprint store with the method of ``fit.method``:

``pavi_e``  plate-amortized VI, encodings computed from the data (default, see :mod:`pavi_parcel.model.guide`);
``pavi_f``  plate-amortized VI, a small free encoding per subject;
``svi``     mean-field stochastic VI, free parameters everywhere (:mod:`pavi_parcel.model.meanfield`);
``vbem``    VB-EM with closed-form updates (:mod:`.vbem`).

Each step takes ``batch_subjects`` subjects and one vertex patch (a block of contiguous store
rows, about ``batch_vertices`` long, of a fixed partition); an epoch visits every (subject, patch)
pair once, in a random order (:func:`.epochs.epoch_batch`). The step reads their fingerprints from the
store (or from an in-memory cache of the packed store rows bounded by ``memory_budget_gb``),
computes the minibatch ELBO scaled to the full plates, takes one Adam step on the shared weights
and concentrations, and applies the guide's closed-form updates (theta, mu, encodings).

Fingerprints enter each step through two products only, ``x . E[nu]`` and the label-weighted
sums ``sum_n lambda_n x_n`` (:class:`.stream.Block`: binary stores stay 0/1 matrices,
demeaning and normalisation are folded into the products), and no gradient flows back through them (see
:func:`.passes.batch_elbo`), so a step costs two matrix products over the batch.

After training, PAVI label posteriors are calibrated (:func:`.calibration.calibrate_labels`), every training
subject's encoding is refreshed by a streamed pass over all its vertices, and a final pass gives
the posterior and the model state (what :func:`pavi_parcel.model.new_subjects.infer_subjects`
needs for new subjects): a :class:`FitResult`, which :func:`fit_model` writes as ``posterior.h5``
and ``model_state.pt``.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pavi_parcel.exceptions import BadInputError, InterruptedFit
from pavi_parcel.io.atomic import remove_stale_temporaries
from pavi_parcel.model.guide import InitState, PaviGuide
from pavi_parcel.model.hierarchy import PlateScale, theta_term
from pavi_parcel.model.potts import smooth_maps
from pavi_parcel.settings.schema import FitSettings, ModelSettings
from pavi_parcel.stores.fingerprints import FingerprintStore
from pavi_parcel.stores.posterior import Posterior

from .calibration import calibrate_in_training, calibrate_labels, calibrating
from .checkpoint import CHECKPOINT_NAME, StopSignals, load_checkpoint, save_checkpoint, settings_key
from .device import resolve_device, torch_threads
from .epochs import epoch_batch
from .initialisation import initialise
from .optim import build_guide, make_optimizer
from .passes import TERM_NAMES, batch_elbo, subject_pass
from .result import FitResult
from .smoothing import choose_potts_beta, potts_neighbours, smoothing_wanted
from .state import TrainState
from .stream import FingerprintSource
from .vbem import run_vbem

log = logging.getLogger(__name__)

#: fit settings that change when or how often a fit stops or saves, not what it computes per step
RESUMABLE_FIT_KEYS = ("max_steps", "max_minutes", "checkpoint_every", "tol", "memory_budget_gb", "min_epochs",
                      "posterior_passes", "refine_steps")


class ElboLog:
    """The ELBO log: step, seconds, elbo and the per-term columns, kept in memory and, with a path,
    written to ``elbo.tsv`` (truncated to ``resume_step`` on resume)."""

    COLUMNS = ("step", "seconds", "elbo") + TERM_NAMES

    def __init__(self, path: Path | None, resume_step: int):
        self.path, self.rows = path, []
        if resume_step > 0 and path is not None and path.exists():
            with path.open() as fh:
                rows = [r for r in csv.reader(fh, delimiter="\t")][1:]
            self.rows = [dict(zip(self.COLUMNS, map(float, r))) for r in rows if r and int(r[0]) <= resume_step]
        self.fh = path.open("w", newline="") if path is not None else None
        if self.fh is not None:
            self.writer = csv.writer(self.fh, delimiter="\t")
            self.writer.writerow(self.COLUMNS)
            self.writer.writerows([self._cells(row) for row in self.rows])

    @staticmethod
    def _cells(row: dict[str, float]) -> list[str]:
        return [str(int(row["step"])), f"{row['seconds']:.3f}", f"{row['elbo']:.6e}"] + \
            [f"{row[k]:.6e}" for k in TERM_NAMES]

    def add(self, step: int, seconds: float, elbo: float, terms: dict[str, float]) -> None:
        row = {"step": float(step), "seconds": seconds, "elbo": elbo, **terms}
        self.rows.append(row)
        if self.fh is not None:
            self.writer.writerow(self._cells(row))

    def flush(self) -> None:
        if self.fh is not None:
            self.fh.flush()

    def close(self) -> None:
        if self.fh is not None and not self.fh.closed:
            self.fh.close()


def fit_model(store_path: Path, model_dir: Path, model: ModelSettings, fit: FitSettings, seed: int,
              device: str = "auto") -> Path:
    """Fit the hierarchical model to a fingerprint store; write ``model_dir/posterior.h5``.

    Parameters
    ----------
    store_path : Path
        Fingerprint store (``work/fingerprints.h5``).
    model_dir : Path
        Output folder: ``posterior.h5``, ``model_state.pt``, ``checkpoint.pt``, ``elbo.tsv``.
    model, fit : ModelSettings, FitSettings
        The ``model.*`` and ``fit.*`` settings (``conf/model/mshbm.yaml``, ``conf/fit/*.yaml``).
    seed : int
        Seeds initialisation and minibatch draws.
    device : str
        ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Returns
    -------
    Path of ``posterior.h5``.

    Raises
    ------
    InterruptedFit
        After checkpointing, when SIGTERM or SIGUSR1 arrived during the fit.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(model_dir)
    with FingerprintStore(store_path) as store:
        result = fit_store(store, model, fit, seed, device, model_dir)
    return result.save(model_dir)


def fit_store(store: FingerprintStore, model: ModelSettings, fit: FitSettings, seed: int, device: str = "auto",
              checkpoint_dir: Path | None = None) -> FitResult:
    """Fit the model to an open fingerprint store, in memory.

    Parameters
    ----------
    store : FingerprintStore
    model, fit : ModelSettings, FitSettings
    seed : int
    device : str
    checkpoint_dir : Path or None
        Folder of ``checkpoint.pt`` and ``elbo.tsv`` (resume from them); None = no files.

    Returns
    -------
    FitResult
    """
    if fit.method == "vbem" and model.atlas_prior is not None:
        raise BadInputError("fit.method=vbem does not use an atlas prior", "fit.method pavi_e, pavi_f or svi "
                            "with model.prior", "vbem", "set model.prior=null or fit.method=pavi_e")
    if fit.method == "vbem":
        return run_vbem(store, model, fit, seed)
    with torch_threads(fit.num_threads):
        return _train(store, model, fit, seed, resolve_device(device), checkpoint_dir)


def _init_to_dict(init: InitState) -> dict[str, Any]:
    return {k: getattr(init, k) for k in ("mu", "group_labels", "concentrations", "rho", "patches", "dim", "prior")}


def _train(store: FingerprintStore, model: ModelSettings, fit: FitSettings, seed: int, dev: torch.device,
           folder: Path | None) -> FitResult:
    method = fit.method
    source = FingerprintSource(store, fit.memory_budget_gb, dev)
    n_sub, n_ses, n_vert = store.n_subjects, store.n_sessions, store.n_vertices
    fit_key = {k: v for k, v in fit.to_dict().items() if k not in RESUMABLE_FIT_KEYS}
    key = settings_key(model.to_dict(), fit_key, seed, str(store.path.resolve()), n_sub, n_ses, n_vert, store.n_seeds)
    ckpt_path = None if folder is None else folder / CHECKPOINT_NAME
    saved = load_checkpoint(ckpt_path, key) if ckpt_path is not None else None
    init = InitState(**saved["init"]) if saved else initialise(source, model, fit, seed)
    guide = build_guide(init, n_sub, n_ses, model, fit, seed).to(dev)
    if smoothing_wanted(model):
        guide.neighbours = potts_neighbours(store, dev)
    opt = make_optimizer(guide, fit)
    state = TrainState()
    if saved:
        guide.load_state_dict(saved["guide"])
        opt.load_state_dict(saved["optimizer"])
        state = TrainState.from_dict(saved["monitor"])
        log.info("Resuming %s fit from step %d", method, state.step)

    def checkpoint() -> None:
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, {"key": key, "init": _init_to_dict(init), "guide": guide.state_dict(),
                                        "optimizer": opt.state_dict(), "monitor": state.to_dict()})

    smask = torch.as_tensor(store.session_mask, device=dev)
    n_batch = min(fit.batch_subjects, n_sub)
    n_patch = len(guide.patches)
    scale = PlateScale(subject=n_sub / n_batch, vertex=float(n_patch))
    steps_per_epoch = math.ceil(n_sub / n_batch) * n_patch
    n_obs = float(smask.sum()) * n_vert
    elog = ElboLog(None if folder is None else folder / "elbo.tsv", state.step)
    try:
        started = time.perf_counter() - state.seconds
        max_seconds = 60.0 * fit.max_minutes
        with StopSignals() as stop, tqdm(total=fit.max_steps, initial=state.step, desc=f"fit {method}",
                                         mininterval=1.0, leave=False) as bar:
            while not state.finished:
                subj_np, patch = epoch_batch(seed, state.epochs, state.epoch_n, n_sub, n_batch, n_patch)
                terms = train_step(guide, opt, source, smask, subj_np, patch, scale, n_obs)
                state.record(float(terms.total.detach()), time.perf_counter() - started)
                elog.add(state.step, state.seconds, state.elbo, terms.as_floats())
                if state.close_epoch(steps_per_epoch, fit.tol, fit.min_epochs):
                    guide.refit_theta_prior()
                    calibrate_in_training(guide, source, smask, model, fit)
                bar.update(1)
                bar.set_postfix(elbo=f"{state.elbo:.5e}", epoch=state.epochs, refresh=False)
                if state.converged or state.step >= fit.max_steps or state.seconds >= max_seconds:
                    state.finished = True
                if state.finished or state.step % fit.checkpoint_every == 0 or stop.received:
                    elog.flush()
                    checkpoint()
                if stop.received:
                    where = f"; checkpoint saved to {ckpt_path}; rerun the same command to resume" if ckpt_path \
                        else " (no checkpoint folder: nothing saved)"
                    raise InterruptedFit(f"Fit interrupted by {stop.name} at step {state.step}{where}")
    finally:
        elog.close()
    log.info("%s: %d steps, %.1f s, converged=%s", method, state.step, state.seconds, state.converged)
    return _final_pass(guide, source, smask, model, fit, state, elog.rows)


def train_step(guide, opt: torch.optim.Optimizer, source: FingerprintSource, smask: torch.Tensor,
               subj_np: np.ndarray, patch: int, scale: PlateScale, n_obs: float):
    """One stochastic step: scaled minibatch ELBO, Adam on shared weights, closed-form updates.

    Returns the minibatch's :class:`~pavi_parcel.model.hierarchy.ElboTerms` (detached).
    """
    a, b = guide.patches[patch]
    x = source.get(subj_np, a, b)
    subj = torch.as_tensor(subj_np, device=smask.device)
    terms, lam, q, sums, counted = batch_elbo(guide, x, subj, patch, smask[subj], scale)
    opt.zero_grad(set_to_none=True)
    (-terms.total / n_obs).backward()
    opt.step()
    guide.after_step(subj, patch, sums, counted, q.detach())
    for name in terms.NAMES:
        setattr(terms, name, getattr(terms, name).detach())
    return terms


@torch.no_grad()
def _final_pass(guide, source: FingerprintSource, smask: torch.Tensor, model: ModelSettings, fit: FitSettings,
                state: TrainState, elbo_rows: list[dict[str, float]]) -> FitResult:
    """Refresh the encodings, calibrate, and stream every subject once more for the posterior."""
    store = source.store
    probs = np.zeros((store.n_subjects, store.n_vertices, guide.n_networks), dtype=np.float32)
    n_refresh = fit.posterior_passes if isinstance(guide, PaviGuide) else 0
    for _ in range(n_refresh):  # refresh every encoding over all of its vertices
        for s in tqdm(range(store.n_subjects), desc="refresh encodings", leave=False):
            subject_pass(guide, source, s, smask, update=True)
    calibration = {}
    if calibrating(guide, model):
        calibration = calibrate_labels(guide, source, smask, fit.calibration_subjects,
                                       tempers_prior=model.calibration == "consistency")
    smoothing = _potts_strength(guide, source, smask, model)
    elbo = 0.0
    trained_beta, guide.potts_beta = guide.potts_beta, 0.0  # per-vertex posteriors; the Potts term comes after
    for s in tqdm(range(store.n_subjects), desc="posteriors", leave=False):
        probs[s], totals = subject_pass(guide, source, s, smask, update=False)
        elbo += sum(totals.values())
        if smoothing["beta"] > 0:
            unary = torch.log(torch.as_tensor(probs[s], device=guide.mu.device).clamp_min(1e-12))[None]
            probs[s] = smooth_maps(unary, guide.neighbours, smoothing["beta"], smoothing["gamma"],
                                   smoothing.get("keep_confidence", False))[0].cpu().numpy()
    guide.potts_beta = trained_beta
    elbo += float(theta_term(guide.theta_beta(slice(None)), guide.alpha(), PlateScale()))
    conc = guide.concentrations()
    attrs = {"method": fit.method, "elbo": elbo, "n_steps": state.step, "seconds": float(state.seconds),
             "converged": bool(state.converged), "kappa": float(conc.kappa.detach()),
             "sigma": float(conc.sigma.detach()), "eps": float(conc.eps.detach()),
             "theta_prior_precision": float(guide.alpha0), "n_variational_parameters": guide.n_variational_parameters(),
             "calibration": calibration, "potts": smoothing,
             "settings": {"model": model.to_dict(), "fit": fit.to_dict()}}
    posterior = Posterior(probs, guide.group_probs().float().cpu().numpy(), guide.current_mu().detach().cpu().numpy(),
                          store.subjects, store.sessions, store.vertex_index, store.space, attrs)
    model_state = guide.model_state()
    model_state.update(method=fit.method, vertex_index=np.asarray(store.vertex_index), n_seeds=store.n_seeds,
                       n_networks=guide.n_networks, refine_steps=fit.refine_steps, model_settings=model.to_dict(),
                       subjects=list(store.subjects), potts_beta=smoothing["beta"],
                       potts_gamma=smoothing["gamma"])
    return FitResult(posterior, model_state, elbo_rows)


def _potts_strength(guide, source: FingerprintSource, smask: torch.Tensor, model: ModelSettings) -> dict:
    """Beta of the reported maps: chosen across sessions (``auto``), the fixed setting, or 0 without a mesh."""
    if guide.neighbours is None:
        return {"beta": 0.0, "gamma": 1.0, "method": "off" if not smoothing_wanted(model) else "no mesh"}
    if model.potts_beta != "auto":
        return {"beta": float(model.potts_beta), "gamma": 1.0, "method": "fixed"}
    return choose_potts_beta(guide, source, smask, guide.neighbours)


__all__ = ["ElboLog", "RESUMABLE_FIT_KEYS", "fit_model", "fit_store", "train_step"]
