"""Command-line parsing: BIDS-App style multi-value options, overrides, exit codes."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from pavi_parcel.cli import main
from pavi_parcel.cli.args import expand_multi_value_options
from pavi_parcel.settings.compose import compose, quote_override as quote

LABELS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)


def test_participant_label_takes_several_values():
    argv = ["fit", "bids", "out", "--participant-label", "01", "02", "sub-03", "model.n_networks=7"]
    assert expand_multi_value_options(argv) == [
        "fit", "bids", "out", "--participant-label", "01", "--participant-label", "02",
        "--participant-label", "sub-03", "model.n_networks=7"]


def test_participant_label_repeats_and_inline_value():
    argv = ["fit", "--participant-label=01", "02", "--space", "fsaverage5", "--participant-label", "04", "b", "o"]
    out = expand_multi_value_options(argv)
    assert out[:4] == ["fit", "--participant-label", "01", "--participant-label"]
    # as in BIDS Apps, positional arguments go before the flag: "b" and "o" here are labels too
    assert out.count("--participant-label") == 5


@given(st.lists(LABELS, min_size=1, max_size=5))
def test_every_label_after_the_flag_is_kept(labels):
    out = expand_multi_value_options(["fit", "--participant-label", *labels, "--device", "cpu"])
    assert [out[i + 1] for i, tok in enumerate(out) if tok == "--participant-label"] == labels
    assert out[-2:] == ["--device", "cpu"]


@given(st.text(min_size=0, max_size=12))
def test_quoted_values_survive_hydra_parsing(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(f"key={quote(value)}")
    assert parsed.value() == value


def test_unknown_override_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "bids").mkdir()
    code = main(["fit", str(tmp_path / "bids"), str(tmp_path / "out"), "model.not_a_key=3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not_a_key" in err and "Fix:" in err


@pytest.mark.parametrize("override,needle", [("model.n_networks=1", "n_networks"),
                                             ("model.n_networks=abc", "n_networks"),
                                             ("device=tpu", "device"),
                                             ("nonsense", "KEY=VALUE")])
def test_invalid_values_are_rejected(override, needle, tmp_path, capsys):
    code = main(["fit", str(tmp_path), str(tmp_path / "out"), override])
    assert code == 2 and needle in capsys.readouterr().err


def test_compose_resolves_space_and_labels(tmp_path):
    cfg = compose([f"bids_dir={tmp_path}", f"out_dir={tmp_path / 'o'}", "data=mni152",
                   "data.space=MNI152NLin6Asym", "participant_label=[01,'sub-02']"])
    assert cfg.data.space == "MNI152NLin6Asym" and list(cfg.participant_label) == ["01", "sub-02"]


def _group_options():
    from pavi_parcel.settings.compose import CONF_DIR

    for group_dir in sorted(p for p in CONF_DIR.rglob("*") if p.is_dir()):
        group = group_dir.relative_to(CONF_DIR).as_posix()
        for option in sorted(group_dir.glob("*.yaml")):
            yield group, option.stem


@pytest.mark.parametrize("group,option", list(_group_options()))
def test_every_config_group_option_composes(group, option, tmp_path):
    cfg = compose([f"bids_dir={tmp_path}", f"out_dir={tmp_path / 'o'}", f"{group}={option}"])
    if not group.startswith("hydra"):
        assert hasattr(cfg, group.split("/")[0])


@pytest.mark.parametrize("argv,needle", [
    (["fit", "b", "o", "--n-networks", "abc"], "--n-networks"),
    (["fit", "b", "o", "--bogus"], "--bogus"),
    (["fit"], "bids_dir"),
    (["apply", "o", "b", "--refine-steps", "x"], "--refine-steps"),
    (["frobnicate"], "frobnicate"),
])
def test_usage_errors_are_one_line_and_exit_2(argv, needle, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("pavi-parcel: error: ") and needle in err and "Fix:" in err and "--help" in err


def test_library_keys_become_the_options_of_the_command(capsys, tmp_path):
    code = main(["apply", str(tmp_path / "nofit"), str(tmp_path), "--participant-label", "01"])
    err = capsys.readouterr().err
    assert code == 2 and "pavi-parcel fit" in err
    code = main(["fit", str(tmp_path), str(tmp_path / "out"), "model.n_networks=1"])
    err = capsys.readouterr().err
    assert code == 2 and "Invalid model.n_networks" in err and "Fix: set --n-networks 17" in err
