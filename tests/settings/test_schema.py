"""The settings schema: one default per key, the YAML files as its commented view, checked construction."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pavi_parcel.exceptions import BadInputError, BadInputErrors
from pavi_parcel.settings.compose import CONF_DIR, compose, load_settings, to_yaml
from pavi_parcel.settings.rules import build, collect, keys
from pavi_parcel.settings.schema import (
    FIT_PRESETS,
    ConnectomeSettings,
    DataSettings,
    ExportSettings,
    FingerprintSettings,
    FitSettings,
    IngestSettings,
    ModelSettings,
    QCSettings,
    RunSettings,
    fit_preset,
)

GROUPS = {"data": DataSettings, "ingest": IngestSettings, "qc": QCSettings, "fingerprints": FingerprintSettings,
          "model": ModelSettings, "fit": FitSettings, "export": ExportSettings, "connectome": ConnectomeSettings}
DEFAULT_OPTIONS = {"data": "default", "ingest": "default", "qc": "default", "fingerprints": "default", "model": "mshbm",
                   "fit": "pavi_e", "export": "default", "connectome": "default"}
PRESETS = {("fit", method): values for method, values in FIT_PRESETS.items()}
PRESETS.update({("data", name): {"space": space} for name, space in (
    ("mni152", "MNI152NLin2009cAsym"), ("fsaverage5", "fsaverage5"), ("fsaverage6", "fsaverage6"), ("fsLR", "fsLR"))})


def _options():
    for group in GROUPS:
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            yield group, path


@pytest.mark.parametrize("group,path", list(_options()), ids=lambda v: getattr(v, "stem", v))
def test_every_yaml_option_is_a_commented_view_of_the_schema(group, path: Path):
    cls = GROUPS[group]
    values = yaml.safe_load(path.read_text()) or {}
    assert set(values) <= set(cls.keys()), f"{path}: keys the schema does not know: {set(values) - set(cls.keys())}"
    preset = PRESETS.get((group, path.stem), {})
    expected = build(cls, preset).to_dict()
    for key, value in values.items():  # every value listed is the schema default or the preset's change
        assert build(cls, {key: value}).to_dict()[key] == expected[key], f"{path}: {key}={value!r}"
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):  # every key is commented for the user, on its line or just above
        if line and not line.startswith((" ", "#")):
            assert "#" in line or (i > 0 and lines[i - 1].startswith("#")), f"{path}: no comment on {line!r}"
    if DEFAULT_OPTIONS[group] == path.stem:
        assert set(values) >= set(cls.keys()) - {"max_iter"}, f"{path} lists every key (max_iter: vbem only)"


def test_top_level_yaml_matches_run_settings():
    values = yaml.safe_load((CONF_DIR / "config.yaml").read_text())
    defaults = values.pop("defaults")
    assert [next(iter(d)) for d in defaults if isinstance(d, dict)] == list(GROUPS)
    assert {next(iter(d.items())) for d in defaults if isinstance(d, dict)} == set(DEFAULT_OPTIONS.items())
    plain = [f.name for f in RunSettings.__dataclass_fields__.values() if f.name not in GROUPS]
    assert list(values) == plain
    reference = RunSettings(bids_dir="/a", out_dir="/b").to_dict()
    for key, value in values.items():
        if value != "???":
            assert value == reference[key], key


def test_composed_defaults_are_the_schema_defaults(tmp_path):
    settings = compose([f"bids_dir={tmp_path}", f"out_dir={tmp_path / 'out'}"])
    assert settings == RunSettings(bids_dir=tmp_path, out_dir=tmp_path / "out")
    assert settings.work_folder == (tmp_path / "out" / "work").resolve()


def test_saved_settings_round_trip(tmp_path):
    settings = compose([f"bids_dir={tmp_path}", f"out_dir={tmp_path / 'out'}", "model.n_networks=7", "fit=vbem",
                        "participant_label=['01','02']", "data=mni152", "ingest.strategy=[motion]"])
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(settings))
    assert load_settings(path) == settings
    assert settings.fit.tol == 1e-6 and settings.fit == fit_preset("vbem")
    saved = yaml.safe_load(path.read_text())
    saved["fit"]["key_of_another_version"] = 1
    path.write_text(yaml.safe_dump(saved))
    assert load_settings(path) == settings  # keys of other versions are ignored when reading back


def test_constructing_settings_checks_every_value_at_once():
    with pytest.raises(BadInputErrors) as err:
        FitSettings(lr=-1.0, batch_subjects=0, method="adam")
    assert [e.what for e in err.value.errors] == ["Invalid fit.method", "Invalid fit.batch_subjects", "Invalid fit.lr"]
    assert all("Fix: set fit." in e.message for e in err.value.errors)
    assert isinstance(err.value, ValueError)  # Python callers may catch bad settings as ValueError
    assert FitSettings(lr=1).lr == 1.0 and isinstance(FitSettings(lr=1).lr, float)
    assert DataSettings(sessions=["01", 2]).sessions == ("01", "2")
    with pytest.raises(BadInputError, match="ingest.low_pass"):
        IngestSettings(low_pass=0.08)  # a cross-field rule: low-pass needs the Butterworth filter


def test_nested_settings_and_unknown_keys_are_named():
    _, problems = collect(RunSettings, {"bids_dir": "/a", "out_dir": "/b", "model": {"n_networks": 1, "kapa": 2},
                                        "fitt": {}})
    messages = [p.message for p in problems]
    assert any("Unknown configuration key 'fitt'" in m for m in messages)
    assert any("Unknown configuration key 'model.kapa'" in m for m in messages)
    assert any(m.startswith("Invalid model.n_networks") for m in messages)
    missing = collect(RunSettings, {})[1]
    assert {p.what for p in missing} == {"Missing setting bids_dir", "Missing setting out_dir"}
    assert "fit.max_iter" in keys(RunSettings) and "model.potts_beta" in keys(RunSettings)
