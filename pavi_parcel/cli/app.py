"""The ``pavi-parcel`` commands: parse, compose the settings, call one library function.

Exit codes: 0 success, 2 bad input or usage (one line on stderr, no traceback), 3 a fit
interrupted by a signal after checkpointing, 1 internal error.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from pavi_parcel import __version__
from pavi_parcel.connectome.stage import connectome_stage
from pavi_parcel.exceptions import BadInputError, InterruptedFit
from pavi_parcel.export.maps import export_maps
from pavi_parcel.export.report import build_report
from pavi_parcel.io.layout import subject_maps_folder
from pavi_parcel.settings.compose import compose
from pavi_parcel.simulate import simulate_dataset, simulate_fingerprint_store
from pavi_parcel.validation.scoring import validate_run
from pavi_parcel.workflows.api import connectome_settings, pipeline_overrides
from pavi_parcel.workflows.apply import apply_subjects
from pavi_parcel.workflows.demo import run_demo
from pavi_parcel.workflows.pipeline import run
from pavi_parcel.workflows.scales import run_scales
from pavi_parcel.workflows.sweep import run_sweep

from .args import expand_multi_value_options
from .errors import error_line

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Individual probabilistic brain network parcellations with "
                       "Plate-Amortized Variational Inference.")
export_app = typer.Typer(no_args_is_help=True, help="Re-export maps from a fitted run.")
app.add_typer(export_app, name="export")

OVERRIDES_HELP = "Hydra overrides KEY=VALUE, e.g. model.n_networks=7 fit.max_steps=500"
COMMANDS = ("fit", "export", "apply", "connectome", "report", "validate", "simulate", "demo")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pavi-parcel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                        help="Print the version and exit.")) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@app.command(context_settings={"allow_extra_args": False})
def fit(
    bids_dir: Path = typer.Argument(..., help="BIDS dataset: fMRIPrep derivatives (or raw BIDS with derivatives/)."),
    out_dir: Path = typer.Argument(..., help="Output folder (a BIDS derivatives dataset)."),
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
    participant_label: list[str] | None = typer.Option(
        None, "--participant-label", help="Participants to include (with or without 'sub-'); "
                                          "several may follow one flag: --participant-label 01 02 sub-03."),
    space: str | None = typer.Option(None, help="auto (default: the one space with runs), fsaverage5, fsaverage6, "
                                     "fsLR (CIFTI) or a volume space such as MNI152NLin2009cAsym."),
    n_networks: list[int] | None = typer.Option(
        None, "--n-networks", help="Number of networks K; several (--n-networks 7 17) fit one scale each from one "
                                   "ingest and store, into OUT_DIR/pavi<K>/ (model.nested=true nests them)."),
    prior: str | None = typer.Option(None, help="Atlas prior: yeo7, yeo17, or PATH to a group dseg/probseg in the "
                                        "space of the runs; sets K and names the networks after the atlas."),
    device: str | None = typer.Option(None, help="auto, cpu or cuda."),
    stop_after: str | None = typer.Option(None, "--stop-after", help="ingest, fingerprints or fit."),
    multirun: bool = typer.Option(False, "--multirun", "-m", help="Run a Hydra sweep through the launcher."),
) -> None:
    """Ingest, fingerprint, fit and export a cohort (resumable: rerun the same command)."""
    scales = sorted(set(n_networks or []))
    items = pipeline_overrides(bids_dir, out_dir, participant_label, space, scales[0] if len(scales) == 1 else None,
                               prior, device, stop_after, overrides or [])
    if len(scales) > 1:
        if multirun:
            raise BadInputError("Several --n-networks values and --multirun", "one of them",
                                "both", "sweep the scales with model.n_networks=7,17 --multirun instead")
        folders = run_scales(items, scales)
        typer.echo("Done: one derivative per scale in " + ", ".join(str(f) for f in folders))
        return
    if multirun:
        raise typer.Exit(run_sweep(items))
    out = run(compose(items))
    typer.echo(f"Done: outputs in {out}")


@export_app.command("maps")
def export_maps_command(
    out_dir: Path = typer.Argument(..., help="Output folder of a fitted run."),
    format: str | None = typer.Option(None, "--format", help="gifti, cifti or nifti (default: from the space)."),
    reference: str | None = typer.Option(None, help="Name networks after yeo7, yeo17 or a dseg PATH."),
) -> None:
    """Write soft and hard maps, uncertainty and the group atlas from the saved posterior."""
    paths = export_maps(out_dir, fmt=format, reference=reference)
    typer.echo(f"Wrote {len(paths)} files under {out_dir}")


@app.command("apply")
def apply_command(
    out_dir: Path = typer.Argument(..., help="Output folder of a fitted run (its model is left unchanged)."),
    bids_dir: Path = typer.Argument(..., help="BIDS dataset holding the new participants."),
    participant_label: list[str] | None = typer.Option(
        None, "--participant-label", help="New participants (not in the fit); several may follow one flag."),
    refine_steps: int | None = typer.Option(None, "--refine-steps",
                                               help="Encoder refinement passes (default: fit.refine_steps)."),
    n_jobs: int | None = typer.Option(None, "--n-jobs", help="Parallel ingestion workers (default: the run's)."),
) -> None:
    """Map new participants with the trained encoders and group model (no refit)."""
    done = apply_subjects(out_dir, bids_dir, participant_label or [], refine_steps=refine_steps, n_jobs=n_jobs)
    typer.echo(f"Mapped {len(done.subjects)} new participant(s): maps in "
               + ", ".join(str(subject_maps_folder(Path(out_dir), s)) for s in done.subjects))


@app.command("connectome")
def connectome_command(
    out_dir: Path = typer.Argument(..., help="Output folder of a fitted, exported run."),
    overrides: list[str] | None = typer.Argument(None, help="connectome.KEY=VALUE, e.g. connectome.weighting=hard"),
) -> None:
    """Network time series and connectomes per subject (group-sparse partial correlations), resumable."""
    settings = connectome_settings(out_dir, overrides or [])
    paths = connectome_stage(out_dir, settings)
    typer.echo(f"Wrote {len(paths)} connectome files under {out_dir}")


@app.command()
def report(out_dir: Path = typer.Argument(..., help="Output folder of a fitted run.")) -> None:
    """Build OUT_DIR/report.html: atlas, subject maps, uncertainty, ELBO, QC."""
    typer.echo(f"Report: {build_report(out_dir)}")


@app.command()
def validate(
    out_dir: Path = typer.Argument(..., help="Output folder of a fitted run."),
    truth: Path | None = typer.Option(None, help="truth/ folder of a simulation (ARI, Dice, calibration)."),
    heldout: Path | None = typer.Option(None, help="BIDS dataset with held-out runs (homogeneity, held-out "
                                                   "log-likelihood)."),
) -> None:
    """Score the maps against planted truth, on held-out runs, or (alone) across the training sessions.

    Writes OUT_DIR/model/metrics.tsv.
    """
    table = validate_run(out_dir, truth_dir=truth, heldout_dir=heldout)
    typer.echo(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


@app.command()
def simulate(
    out_dir: Path = typer.Argument(..., help="Folder for bids/ (the dataset) and truth/ (planted answers)."),
    n_subjects: int = typer.Option(10, "--n-subjects", min=1),
    n_sessions: int = typer.Option(2, "--n-sessions", min=1),
    n_runs: int = typer.Option(1, "--n-runs", min=1, help="Runs per session."),
    n_frames: int = typer.Option(200, "--n-frames", min=20),
    n_networks: int = typer.Option(17, "--n-networks", min=2),
    space: str = typer.Option("fsaverage5", help="fsaverage5, fsaverage6, fsLR (CIFTI) or MNI152NLin2009cAsym."),
    seed: int = typer.Option(0),
    snr: float | None = typer.Option(None, help="Signal-to-noise ratio of the network signal (default: realistic)."),
    layout: str = typer.Option("auto", help="auto (Yeo 2011 for 7 or 17 networks on fsaverage5), yeo or procedural."),
    deviation_smoothness: int = typer.Option(25, "--deviation-smoothness", min=0,
                                             help="Smoothing steps of the subject deviation fields: 0 = "
                                                  "salt-and-pepper, 25 = default, 100 = coarse."),
    islands: int = typer.Option(5, "--islands", min=0, help="Patches per subject taken over by another network."),
    graph_density: float = typer.Option(0.0, "--graph-density", help="Plant a sparse network graph with this "
                                        "fraction of network pairs connected (truth/graph.npz); 0 = none."),
    nesting_strength: float = typer.Option(0.0, "--nesting-strength", help="Plant Yeo 7-network parents over the "
                                           "17 networks: children share a parent signal of this amplitude."),
    noise_smoothness: int = typer.Option(2, "--noise-smoothness", min=0,
                                         help="Smoothing steps of the thermal noise: 0 = independent at every "
                                              "vertex, 2 = default."),
    n_jobs: int = typer.Option(1, "--n-jobs", help="Parallel workers for --fingerprints-only."),
    fingerprints_only: bool = typer.Option(False, "--fingerprints-only",
                                           help="Write a fingerprint store directly (no fMRI), for scale tests."),
) -> None:
    """Write a simulated fMRIPrep-derivatives dataset with planted networks."""
    if fingerprints_only:
        path = out_dir / "work" / "fingerprints.h5"
        extra = {} if snr is None else {"snr": snr}
        simulate_fingerprint_store(path, n_subjects=n_subjects, n_sessions=n_sessions, n_networks=n_networks,
                                       seed=seed, space=space, layout=layout, n_jobs=n_jobs,
                                       truth_dir=out_dir / "truth", **extra)
        typer.echo(f"Fingerprint store: {path}\nTruth: {out_dir / 'truth'}")
        return
    extra = {} if snr is None else {"snr": snr}
    dataset = simulate_dataset(out_dir, n_subjects=n_subjects, n_sessions=n_sessions, n_runs=n_runs,
                                   n_frames=n_frames, space=space, n_networks=n_networks, seed=seed,
                                   layout=layout, deviation_smoothness=deviation_smoothness, n_islands=islands,
                                   graph_density=graph_density, nesting_strength=nesting_strength,
                                   noise_smoothness=noise_smoothness, **extra)
    typer.echo(f"Dataset: {dataset.bids_dir}\nTruth: {dataset.truth_dir}")


@app.command()
def demo(out_dir: Path = typer.Argument(..., help="Folder for the simulated data and the results.")) -> None:
    """Simulate a small cohort, fit, export and report: the whole product in a few minutes."""
    report_path = run_demo(out_dir)
    typer.echo(f"Open the report: {report_path}")


def _command(args: list[str]) -> str | None:
    """The command of a command line (``fit``, ``export`` ...), or None before one is named."""
    return next((a for a in args if a in COMMANDS), None)


def usage_error(exc: typer.TyperException, args: list[str]) -> BadInputError:
    """A parsing error of Typer (bad type, unknown option, missing argument) in the one error template."""
    command = _command(args)
    shown = " ".join(["pavi-parcel", *args])
    shown = shown if len(shown) <= 100 else shown[:97] + "..."
    where = f"pavi-parcel {command} --help" if command else "pavi-parcel --help"
    what = " ".join(exc.format_message().split()).rstrip(".") or exc.__class__.__name__
    return BadInputError(what, f"the arguments and options of `{where}`", f"`{shown}`",
                         f"correct the command line (see `{where}`)")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, turn user errors into one line and exit code 2."""
    args = expand_multi_value_options(list(sys.argv[1:] if argv is None else argv))
    try:
        code = app(args, prog_name="pavi-parcel", standalone_mode=False)
    except BadInputError as exc:
        typer.echo(f"pavi-parcel: error: {error_line(exc, _command(args))}", err=True)
        return 2
    except InterruptedFit as exc:
        typer.echo(f"pavi-parcel: {exc}", err=True)
        return 3
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        return 130
    except typer.TyperException as exc:  # usage: bad type, unknown option, missing argument
        typer.echo(f"pavi-parcel: error: {usage_error(exc, args).message}", err=True)
        return 2
    return int(code or 0)


__all__ = ["app", "main", "usage_error"]
