"""Hydra sweeps (--multirun): one folder per job, shared work dir, overrides checked first."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from omegaconf import DictConfig, OmegaConf

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.workflows.sweep import STATUS_FILE, read_statuses, run_sweep
from pavi_parcel.workflows.sweep_overrides import CONFIG_DIR, sweep_overrides, validate_overrides

TINY_CONFIG = """\
defaults:
  - model: tiny
  - _self_
bids_dir: ???
out_dir: ???
work_dir: null
participant_label: []
seed: 0
device: cpu
n_jobs: 1
"""


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    """A tiny config root with the package's own hydra/ presets (output layout, launchers)."""
    root = tmp_path / "conf"
    (root / "model").mkdir(parents=True)
    (root / "config.yaml").write_text(TINY_CONFIG)
    (root / "model" / "tiny.yaml").write_text("n_networks: 2\nkappa: 1.0\n")
    (root / "hydra").symlink_to(Path(CONFIG_DIR) / "hydra", target_is_directory=True)
    return root


def stand_in(cfg: DictConfig) -> Path:
    """Pipeline stand-in: saves the resolved config and a planted result, marks the work dir."""
    out = Path(cfg.out_dir)
    (out / "model").mkdir(parents=True, exist_ok=True)
    (out / "model" / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (out / "result.json").write_text(json.dumps({"pid": os.getpid(), "k2": cfg.model.n_networks**2}))
    Path(cfg.work_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.work_dir) / f"seen-{cfg.model.n_networks}").touch()
    return out


def failing_for_4(cfg: DictConfig) -> Path:
    if cfg.model.n_networks == 4:
        raise RuntimeError("planted failure for K=4")
    return stand_in(cfg)


def bad_input(cfg: DictConfig) -> Path:
    raise BadInputError("No BOLD runs found", "runs", "none", "check --space")


def test_joblib_sweep_writes_one_folder_per_job(conf: Path, tmp_path: Path) -> None:
    out = tmp_path / "out dir"
    bids = tmp_path / "bids 'quoted'"
    base = {"bids_dir": bids, "out_dir": out, "participant_label": ["01", "02"]}
    overrides = ["model.n_networks=3,4", "model.kappa=2.5", "hydra/launcher=pool", "hydra.launcher.n_jobs=2"]
    assert run_sweep(overrides, base, task=stand_in, config_dir=conf) == 0

    sweep = out / "sweep"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["model.n_networks=3", "model.n_networks=4"]
    pids = set()
    for k in (3, 4):
        folder = sweep / f"model.n_networks={k}"
        saved = yaml.safe_load((folder / "model" / "config.yaml").read_text())
        assert saved["model"] == {"n_networks": k, "kappa": 2.5}
        assert saved["out_dir"] == str(folder)
        assert saved["work_dir"] == str(out / "work")
        assert saved["bids_dir"] == str(bids)
        assert saved["participant_label"] == ["01", "02"]
        composed = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
        assert composed["model"]["n_networks"] == k
        result = json.loads((folder / "result.json").read_text())
        assert result["k2"] == k * k
        pids.add(result["pid"])
        status = json.loads((folder / STATUS_FILE).read_text())
        assert status["status"] == "done"
        assert status["overrides"] == [f"model.n_networks={k}", "model.kappa=2.5"]
    assert os.getpid() not in pids  # ran in joblib workers, not in this process
    assert sorted(p.name for p in (out / "work").iterdir()) == ["seen-3", "seen-4"]


def test_folders_named_by_constant_overrides_without_a_sweep(
    conf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # folders may come as relative KEY=VALUE overrides, as from the CLI
    assert run_sweep(["out_dir=rel/out", "model.kappa=2.5"], task=stand_in, config_dir=conf) == 0
    folder = tmp_path / "rel" / "out" / "sweep" / "model.kappa=2.5"
    assert yaml.safe_load((folder / "model" / "config.yaml").read_text())["out_dir"] == str(folder)
    assert run_sweep([], {"out_dir": tmp_path / "bare"}, task=stand_in, config_dir=conf) == 0
    assert (tmp_path / "bare" / "sweep" / "0" / "result.json").exists()
    assert (tmp_path / "bare" / "sweep" / "0" / ".hydra" / "pavi-parcel.log").exists()
    elsewhere = tmp_path / "elsewhere"  # a sweep folder of the user's choice; statuses found there
    overrides = ["model.kappa=1.5,2.5", f"hydra.sweep.dir='{elsewhere}'"]
    assert run_sweep(overrides, {"out_dir": tmp_path / "o2"}, task=stand_in, config_dir=conf) == 0
    assert sorted(p.name for p in elsewhere.iterdir() if p.is_dir()) == ["model.kappa=1.5", "model.kappa=2.5"]


def test_unknown_key_fails_before_any_job(conf: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"model\.n_netwrks.*\+model\.n_netwrks"):
        run_sweep(["model.n_netwrks=3,4"], {"out_dir": tmp_path / "out"}, task=stand_in, config_dir=conf)
    assert not (tmp_path / "out").exists()


def test_unknown_group_option_and_launcher_key_are_named(conf: Path) -> None:
    base = {"out_dir": "/tmp/unused"}
    with pytest.raises(BadInputError, match="Could not find 'model/huge'"):
        validate_overrides(sweep_overrides(["model=tiny,huge"], base), conf)
    with pytest.raises(BadInputError, match="hydra.launcher.partitoin"):
        overrides = ["hydra/launcher=slurm", "hydra.launcher.partitoin=gpu"]
        validate_overrides(sweep_overrides(overrides, base), conf)
    with pytest.raises(BadInputError, match="does not parse"):
        validate_overrides(sweep_overrides(["model.n_networks=[3"], base), conf)


def test_sweeping_a_shared_setting_is_refused(conf: Path) -> None:
    with pytest.raises(BadInputError, match="n_jobs=1,2.*shared by all jobs"):
        validate_overrides(sweep_overrides(["n_jobs=1,2"], {"out_dir": "/tmp/unused"}), conf)


def test_job_count_covers_every_combination(conf: Path) -> None:
    base = {"out_dir": "/tmp/unused"}
    overrides = sweep_overrides(["model.n_networks=2,3,4", "seed=range(0,2)", "model.kappa=5"], base)
    assert validate_overrides(overrides, conf) == 6


def test_launcher_presets_compose(conf: Path) -> None:
    from hydra import compose, initialize_config_dir

    expected = {
        "slurm": ("SlurmLauncher", {"partition": None, "max_num_timeout": 3, "gpus_per_node": None}),
        "slurm_gpu": ("SlurmLauncher", {"partition": "gpu", "gpus_per_node": 1, "signal_delay_s": 120}),
        "local": ("LocalLauncher", {"cpus_per_task": 1}),
        "pool": ("JoblibLauncher", {"n_jobs": 2}),
        "submitit_slurm": ("SlurmLauncher", {}),
        "joblib": ("JoblibLauncher", {}),
    }
    base = sweep_overrides([], {"out_dir": "/tmp/o"})
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for name, (target, values) in expected.items():
            cfg = compose("config", overrides=[*base, f"hydra/launcher={name}"], return_hydra_config=True)
            launcher = cfg.hydra.launcher
            assert launcher._target_.endswith(target), name
            for key, value in values.items():
                assert launcher[key] == value, (name, key)
            assert cfg.hydra.sweep.dir == "/tmp/o/sweep"


def test_failed_job_gives_exit_code_1_and_keeps_its_error(conf: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_sweep(["model.n_networks=3,4"], {"out_dir": out}, task=failing_for_4, config_dir=conf) == 1
    statuses = {p.name: s for p, s in read_statuses(out / "sweep").items()}
    assert statuses["model.n_networks=3"]["status"] == "done"
    assert statuses["model.n_networks=4"]["status"] == "failed"
    assert "planted failure for K=4" in statuses["model.n_networks=4"]["error"]


def test_bad_input_inside_a_job_reaches_the_caller(conf: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="No BOLD runs found"):
        run_sweep(["model.n_networks=3"], {"out_dir": tmp_path / "out"}, task=bad_input, config_dir=conf)


def test_package_config_accepts_a_sweep_and_rejects_a_typo() -> None:
    base = {"out_dir": "/tmp/unused", "bids_dir": "/tmp/unused-bids"}
    assert validate_overrides(sweep_overrides(["model.n_networks=3,4", "hydra/launcher=slurm"], base)) == 2
    with pytest.raises(BadInputError, match="model.n_netwrks"):
        validate_overrides(sweep_overrides(["model.n_netwrks=3,4"], base))
