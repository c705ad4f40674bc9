"""Training loop: plate subsampling, streaming, device, ELBO log, checkpoints, resume, posteriors.

:func:`fit_model` fits the MS-HBM to a fingerprint store with the method of ``cfg_fit.method``:

``pavi_e``  plate-amortized VI, encodings computed from the data (default, see :mod:`.model.guide`);
``pavi_f``  plate-amortized VI, a small free encoding per subject;
``svi``     mean-field stochastic VI, free parameters everywhere (:mod:`.model.meanfield`);
``vbem``    VB-EM with closed-form updates (:func:`pavi_parcel.model.baselines.fit_vbem`).

Each step takes ``batch_subjects`` subjects and one vertex patch (a block of contiguous store
rows, about ``batch_vertices`` long, of a fixed partition); an epoch visits every (subject, patch)
pair once, in a random order (:func:`epoch_batch`). The step reads their fingerprints from the
store (or from an in-memory cache of the packed store rows bounded by ``memory_budget_gb``),
computes the minibatch ELBO scaled to the full plates, takes one Adam step on the shared weights
and concentrations, and applies the guide's closed-form updates (theta, mu, encodings).

Fingerprints enter each step through two products only, ``x . E[nu]`` and the label-weighted
sums ``sum_n lambda_n x_n`` (:class:`pavi_parcel.inference.stream.Block`: binary stores stay 0/1 matrices,
demeaning and normalisation are folded into the products), and no gradient flows back through them (see
:func:`pavi_parcel.inference.passes.batch_elbo`), so a step costs two matrix products over the batch.

After training, PAVI label posteriors are calibrated (:func:`pavi_parcel.inference.passes.calibrate_labels`), every training
subject's encoding is refreshed by a streamed pass over all its vertices, and a final pass writes
``posterior.h5`` and ``model_state.pt`` (what :func:`pavi_parcel.model.new_subjects.infer_subjects`
needs for new subjects).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from pavi_parcel.exceptions import BadInputError, InterruptedFit
from pavi_parcel.io.atomic import atomic_write, remove_stale_temporaries
from pavi_parcel.model.guide import InitState, PaviGuide
from pavi_parcel.model.hierarchy import PlateScale, theta_term
from pavi_parcel.model.meanfield import MeanFieldGuide
from pavi_parcel.settings.compose import CALIBRATIONS
from pavi_parcel.stores.fingerprints import FingerprintStore
from pavi_parcel.stores.posterior import Posterior, write_posterior

from .calibration import calibrate_in_training, calibrate_labels, calibrating
from .checkpoint import (
    CHECKPOINT_NAME,
    StopSignals,
    load_checkpoint,
    save_checkpoint,
    settings_key,
)
from .initialisation import initialise
from .passes import TERM_NAMES, batch_elbo, subject_pass
from .stream import FingerprintSource

log = logging.getLogger(__name__)

MODEL_DEFAULTS: dict[str, Any] = dict(
    n_networks=17, kappa_init="auto", learn_kappa=True, sigma_init="auto", learn_sigma=True,
    eps_init="auto", learn_eps=True, theta_prior="auto", theta_input="loo", potts_beta=0.0,
    encoder_iterations=2, calibration="consistency", theta_counts="posterior", prior=None, prior_floor=0.2)
FIT_DEFAULTS: dict[str, Any] = dict(
    method="pavi_e", batch_subjects=4, batch_vertices=4096, lr=0.02, lr_concentration=0.02,
    max_steps=5000, max_minutes=60.0, tol=1e-4, min_epochs=3, checkpoint_every=200,
    memory_budget_gb=2.0, init_subjects=50, encoding_dim=8, refine_steps=2, posterior_passes=1, calibration_subjects=10,
    num_threads=0)
METHODS = ("pavi_e", "pavi_f", "svi", "vbem")


def settings_from(cfg: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Plain dict of ``defaults`` overridden by ``cfg`` (a DictConfig, a mapping or None)."""
    out = dict(defaults)
    if cfg is not None:
        try:
            from omegaconf import OmegaConf

            if OmegaConf.is_config(cfg):
                cfg = OmegaConf.to_container(cfg, resolve=True)
        except ImportError:  # pragma: no cover
            pass
        out.update({k: v for k, v in dict(cfg).items()})
    return out


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda`` and ``cuda:N`` as given."""
    device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError("CUDA device requested", "a machine with a CUDA GPU and a CUDA build of torch",
                            "no CUDA device", "use --device auto or --device cpu")
    return torch.device(device)


def build_guide(method: str, init: InitState, n_subjects: int, n_sessions: int, model: Mapping[str, Any],
                fit: Mapping[str, Any], seed: int):
    """The guide of a gradient-based method."""
    if method == "pavi_e":
        return PaviGuide(init, n_subjects, n_sessions, model, encoding="data")
    if method == "pavi_f":
        return PaviGuide(init, n_subjects, n_sessions, model, encoding="free",
                         encoding_dim=int(fit["encoding_dim"]), seed=seed)
    if method == "svi":
        return MeanFieldGuide(init, n_subjects, n_sessions, model)
    raise BadInputError("Unknown fit.method", f"one of {', '.join(METHODS)}", repr(method),
                        "set fit.method=pavi_e")


# --------------------------------------------------------------------------- training loop
class ElboLog:
    """``elbo.tsv`` writer: step, seconds, elbo and the per-term columns; truncated on resume."""

    COLUMNS = ("step", "seconds", "elbo") + TERM_NAMES

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        rows = []
        if resume_step > 0 and path.exists():
            with path.open() as fh:
                rows = [r for r in csv.reader(fh, delimiter="\t")][1:]
            rows = [r for r in rows if r and int(r[0]) <= resume_step]
        self.fh = path.open("w", newline="")
        self.writer = csv.writer(self.fh, delimiter="\t")
        self.writer.writerow(self.COLUMNS)
        self.writer.writerows(rows)

    def add(self, step: int, seconds: float, elbo: float, terms: dict[str, float]) -> None:
        self.writer.writerow([step, f"{seconds:.3f}", f"{elbo:.6e}"] + [f"{terms[k]:.6e}" for k in TERM_NAMES])

    def close(self) -> None:
        self.fh.close()


def fit_model(store_path: Path, model_dir: Path, cfg_model: Mapping[str, Any] | None,
              cfg_fit: Mapping[str, Any] | None, seed: int, device: str = "auto") -> Path:
    """Fit the hierarchical model to a fingerprint store; write ``model_dir/posterior.h5``.

    Parameters
    ----------
    store_path : Path
        Fingerprint store (``work/fingerprints.h5``).
    model_dir : Path
        Output folder: ``posterior.h5``, ``model_state.pt``, ``checkpoint.pt``, ``elbo.tsv``.
    cfg_model, cfg_fit : mapping
        The ``model`` and ``fit`` config groups (see ``conf/model/mshbm.yaml``, ``conf/fit/*.yaml``).
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
    model = settings_from(cfg_model, MODEL_DEFAULTS)
    fit = settings_from(cfg_fit, FIT_DEFAULTS)
    method = str(fit["method"])
    if method not in METHODS:
        raise BadInputError("Unknown fit.method", f"one of {', '.join(METHODS)}", repr(method),
                            "set fit.method=pavi_e")
    if str(model["calibration"]) not in CALIBRATIONS:
        raise BadInputError("Unknown model.calibration", f"one of {', '.join(CALIBRATIONS)}",
                            repr(model["calibration"]), "set model.calibration=consistency")
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(model_dir)
    if method == "vbem" and model.get("prior") not in (None, "", "null", "None"):
        raise BadInputError("fit.method=vbem does not use an atlas prior", "fit.method pavi_e, pavi_f or svi "
                            "with model.prior", "vbem", "drop --prior or use fit.method=pavi_e")
    if method == "vbem":
        return _fit_vbem(Path(store_path), model_dir, model, fit, seed)
    return _train(Path(store_path), model_dir, model, fit, seed, resolve_device(device))


def _fit_vbem(store_path: Path, model_dir: Path, model: dict, fit: dict, seed: int) -> Path:
    from pavi_parcel.model.baselines import fit_vbem

    with FingerprintStore(store_path) as store:
        prior = model.get("theta_prior", "auto")
        result = fit_vbem(store, int(model["n_networks"]), seed=seed, max_iter=int(fit.get("max_iter", 50)),
                          tol=float(fit.get("tol", 1e-6)), theta_prior=1.0 if str(prior) == "auto" else float(prior),
                          progress=True)
        posterior = Posterior(result.subject_probs, result.group_probs, result.group_profiles,
                              store.subjects, store.sessions, store.vertex_index, store.space,
                              {"method": "vbem", "n_networks": int(model["n_networks"])})
    path = model_dir / "posterior.h5"
    write_posterior(path, posterior)
    extra = result.extra
    group = np.clip(np.asarray(result.group_probs, dtype=np.float64), 1e-12, None)
    state = {"method": "vbem", "mu": torch.as_tensor(np.asarray(result.group_profiles, dtype=np.float32)),
             "kappa": float(np.mean(extra.get("kappa", 1.0))), "sigma": float(np.mean(extra.get("sigma", 1.0))),
             "eps": float(np.mean(extra.get("eps", 1.0))), "dim": float(posterior.group_profiles.shape[1] - 1),
             "log_prior": torch.as_tensor(np.log(group / group.sum(1, keepdims=True)), dtype=torch.float32),
             "label_encoder": None, "subject_encoder": None, "encoder_iterations": 2,
             "refine_steps": int(fit.get("refine_steps", 2)), "vertex_index": np.asarray(posterior.vertex_index),
             "n_networks": int(model["n_networks"]), "subjects": list(posterior.subjects), "model_settings": model}
    with atomic_write(model_dir / "model_state.pt") as tmp:
        torch.save(state, tmp)
    return path


def make_optimizer(guide, fit: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Adam over the guide's learned parameters: ``fit.lr``, concentrations ``fit.lr_concentration``.

    Free unit vectors in the D-dimensional fingerprint space (the guide's ``DIRECTIONS``, mean-field
    SVI only) get ``fit.lr / sqrt(D)``: Adam moves every coordinate by about the learning rate, so
    a direction would otherwise turn by about ``lr * sqrt(D)`` per step (at D ~ 1,175, SVI's ELBO
    then fell for minutes before rising).
    """
    conc = [p for p in guide.log_conc.values() if p.requires_grad]
    directions = set(getattr(guide, "DIRECTIONS", ()))
    learned = [(n, p) for n, p in guide.named_parameters() if not n.startswith("log_conc") and p.requires_grad]
    groups = [{"params": [p for n, p in learned if n not in directions], "lr": float(fit["lr"])}]
    turning = [p for n, p in learned if n in directions]
    if turning:
        groups.append({"params": turning, "lr": float(fit["lr"]) / math.sqrt(guide.mu.shape[-1])})
    if conc:
        groups.append({"params": conc, "lr": float(fit["lr_concentration"])})
    return torch.optim.Adam(groups)


def _init_to_dict(init: InitState) -> dict[str, Any]:
    return {k: getattr(init, k) for k in ("mu", "group_labels", "concentrations", "rho", "patches", "dim", "prior")}


def _train(store_path: Path, model_dir: Path, model: dict, fit: dict, seed: int, dev: torch.device) -> Path:
    method = fit["method"]
    store = FingerprintStore(store_path)
    elog = None
    threads = torch.get_num_threads()
    if int(fit.get("num_threads", 0)) > 0:
        torch.set_num_threads(int(fit["num_threads"]))
    try:
        source = FingerprintSource(store, float(fit["memory_budget_gb"]), dev)
        n_sub, n_ses, n_vert = store.n_subjects, store.n_sessions, store.n_vertices
        ignored = ("max_steps", "max_minutes", "checkpoint_every", "tol", "memory_budget_gb", "min_epochs",
                   "posterior_passes", "refine_steps")
        key = settings_key(model, {k: v for k, v in fit.items() if k not in ignored}, seed,
                           str(store_path.resolve()), n_sub, n_ses, n_vert, store.n_seeds)
        ckpt_path = model_dir / CHECKPOINT_NAME
        state = load_checkpoint(ckpt_path, key)
        init = InitState(**state["init"]) if state else initialise(source, model, fit, seed)
        guide = build_guide(method, init, n_sub, n_ses, model, fit, seed).to(dev)
        if float(model.get("potts_beta", 0.0)) > 0:
            from pavi_parcel.model.potts import neighbour_table

            guide.neighbours = neighbour_table(store.space, store.vertex_index).to(dev)
        opt = make_optimizer(guide, fit)
        mon = dict(step=0, seconds=0.0, epoch_sum=0.0, epoch_n=0, prev_epoch=None, epochs=0,
                   converged=False, finished=False, elbo=float("nan"))
        if state:
            guide.load_state_dict(state["guide"])
            opt.load_state_dict(state["optimizer"])
            mon = state["monitor"]
            log.info("Resuming %s fit from step %d", method, mon["step"])

        def checkpoint() -> None:
            save_checkpoint(ckpt_path, {"key": key, "init": _init_to_dict(init), "guide": guide.state_dict(),
                                        "optimizer": opt.state_dict(),
                                        "monitor": dict(mon)})

        smask = torch.as_tensor(store.session_mask, device=dev)
        n_batch = min(int(fit["batch_subjects"]), n_sub)
        n_patch = len(guide.patches)
        scale = PlateScale(subject=n_sub / n_batch, vertex=float(n_patch))
        steps_per_epoch = math.ceil(n_sub / n_batch) * n_patch
        n_obs = float(smask.sum()) * n_vert
        elog = ElboLog(model_dir / "elbo.tsv", mon["step"])
        started = time.perf_counter() - mon["seconds"]
        max_steps, max_seconds = int(fit["max_steps"]), 60.0 * float(fit["max_minutes"])
        with StopSignals() as stop, tqdm(total=max_steps, initial=mon["step"], desc=f"fit {method}",
                                         mininterval=1.0, leave=False) as bar:
            while not mon["finished"]:
                subj_np, patch = epoch_batch(seed, mon["epochs"], mon["epoch_n"], n_sub, n_batch, n_patch)
                terms = train_step(guide, opt, source, smask, subj_np, patch, scale, n_obs)
                mon["step"] += 1
                mon["seconds"] = time.perf_counter() - started
                mon["elbo"] = float(terms.total.detach())
                elog.add(mon["step"], mon["seconds"], mon["elbo"], terms.as_floats())
                if _end_of_epoch(guide, mon, steps_per_epoch, float(fit["tol"]), int(fit["min_epochs"])):
                    calibrate_in_training(guide, source, smask, model, fit)
                bar.update(1)
                bar.set_postfix(elbo=f"{mon['elbo']:.5e}", epoch=mon["epochs"], refresh=False)
                if mon["converged"] or mon["step"] >= max_steps or mon["seconds"] >= max_seconds:
                    mon["finished"] = True
                if mon["finished"] or mon["step"] % int(fit["checkpoint_every"]) == 0 or stop.received:
                    elog.fh.flush()
                    checkpoint()
                if stop.received:
                    raise InterruptedFit(f"Fit interrupted by {stop.name} at step {mon['step']}; "
                                         f"checkpoint saved to {ckpt_path}; rerun the same command to resume")
        elog.close()
        log.info("%s: %d steps, %.1f s, converged=%s", method, mon["step"], mon["seconds"], mon["converged"])
        return _write_outputs(guide, source, smask, model_dir, model, fit, mon)
    finally:
        if elog is not None and not elog.fh.closed:
            elog.close()
        store.close()
        torch.set_num_threads(threads)


def epoch_batch(seed: int, epoch: int, index: int, n_subjects: int, n_batch: int,
                n_patches: int) -> tuple[np.ndarray, int]:
    """The ``index``-th minibatch of an epoch: ``n_batch`` distinct subjects (sorted) and one patch.

    An epoch visits every (subject, patch) pair once, in a random order that depends only on
    ``(seed, epoch)``, so a resumed fit draws what an uninterrupted one would. Sampling
    without replacement matters for the closed-form state (encodings, theta's counts): drawn with
    replacement, an epoch leaves about a third of the pairs unvisited and the fit needed about
    twice the steps to reach the same ELBO (100 subjects, PAVI-E).
    """
    subjects, patches = _epoch_plan(seed, epoch, n_subjects, n_batch, n_patches)
    return subjects[index % len(patches)], int(patches[index % len(patches)])


@lru_cache(maxsize=2)
def _epoch_plan(seed: int, epoch: int, n_subjects: int, n_batch: int,
                n_patches: int) -> tuple[np.ndarray, np.ndarray]:
    """Minibatches of one epoch: subjects (steps, n_batch) and patches (steps,).

    For each patch, a permutation of the subjects is cut into ``ceil(n_subjects / n_batch)``
    batches; the last is filled up with other subjects so that every batch has the size the
    plate scaling assumes. The (batch, patch) pairs are then shuffled.
    """
    rng = np.random.default_rng([seed, 1, epoch])
    per_patch = math.ceil(n_subjects / n_batch)
    subjects = np.empty((n_patches, per_patch, n_batch), dtype=np.int64)
    for p in range(n_patches):
        perm = rng.permutation(n_subjects)
        short = per_patch * n_batch - n_subjects
        if short:
            fill = rng.choice(perm[:n_subjects - (n_batch - short)], short, replace=False)
            perm = np.concatenate([perm, fill])
        subjects[p] = np.sort(perm.reshape(per_patch, n_batch), axis=1)
    patches = np.repeat(np.arange(n_patches), per_patch)
    order = rng.permutation(len(patches))
    return subjects.reshape(-1, n_batch)[order], patches[order]


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


def _end_of_epoch(guide, mon: dict, steps_per_epoch: int, tol: float, min_epochs: int) -> bool:
    """Convergence bookkeeping; True at the end of an epoch (then theta's prior is refitted)."""
    mon["epoch_sum"] += mon["elbo"]
    mon["epoch_n"] += 1
    if mon["epoch_n"] < steps_per_epoch:
        return False
    mean = mon["epoch_sum"] / mon["epoch_n"]
    mon["epochs"] += 1
    prev = mon["prev_epoch"]
    if prev is not None and mon["epochs"] >= min_epochs and abs(mean - prev) <= tol * abs(mean):
        mon["converged"] = True
    mon.update(prev_epoch=mean, epoch_sum=0.0, epoch_n=0)
    guide.refit_theta_prior()
    return True


@torch.no_grad()
def _write_outputs(guide, source: FingerprintSource, smask: torch.Tensor, model_dir: Path, model: dict,
                   fit: dict, mon: dict) -> Path:
    """Final streamed pass over every subject and vertex; posterior.h5 and model_state.pt."""
    store = source.store
    probs = np.zeros((store.n_subjects, store.n_vertices, guide.n_networks), dtype=np.float32)
    n_refresh = int(fit["posterior_passes"]) if isinstance(guide, PaviGuide) else 0
    for _ in range(n_refresh):  # refresh every encoding over all of its vertices
        for s in tqdm(range(store.n_subjects), desc="refresh encodings", leave=False):
            subject_pass(guide, source, s, smask, update=True)
    calibration = {}
    if calibrating(guide, model):
        calibration = calibrate_labels(guide, source, smask, int(fit["calibration_subjects"]),
                                       tempers_prior=model["calibration"] == "consistency")
    elbo = 0.0
    for s in tqdm(range(store.n_subjects), desc="posteriors", leave=False):
        probs[s], totals = subject_pass(guide, source, s, smask, update=False)
        elbo += sum(totals.values())
    elbo += float(theta_term(guide.theta_beta(slice(None)), guide.alpha(), PlateScale()))
    conc = guide.concentrations()
    attrs = {"method": fit["method"], "elbo": elbo, "n_steps": int(mon["step"]), "seconds": float(mon["seconds"]),
             "converged": bool(mon["converged"]), "kappa": float(conc.kappa.detach()),
             "sigma": float(conc.sigma.detach()), "eps": float(conc.eps.detach()), "theta_prior_precision": float(guide.alpha0),
             "n_variational_parameters": guide.n_variational_parameters(), "calibration": calibration,
             "settings": {"model": model, "fit": fit}}
    posterior = Posterior(probs, guide.group_probs().float().cpu().numpy(), guide.current_mu().detach().cpu().numpy(),
                          store.subjects, store.sessions, store.vertex_index, store.space, attrs)
    path = model_dir / "posterior.h5"
    write_posterior(path, posterior)
    state = guide.model_state()
    state.update(method=fit["method"], vertex_index=np.asarray(store.vertex_index), n_seeds=store.n_seeds,
                 n_networks=guide.n_networks, refine_steps=int(fit["refine_steps"]), model_settings=model,
                 subjects=list(store.subjects))
    with atomic_write(model_dir / "model_state.pt") as tmp:
        torch.save(state, tmp)
    return path
