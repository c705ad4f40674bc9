"""Property-based tests: BIDS names, command-line overrides, config values and the map writers."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

from pavi_parcel.atlas.naming import default_table
from pavi_parcel.bids.entities import build_name, normalize_label, parse_entities
from pavi_parcel.cli.args import MULTI_VALUE_OPTIONS, expand_multi_value_options
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.export.writers import hard_labels, to_full_space
from pavi_parcel.settings.compose import compose, quote_override as quote
from pavi_parcel.spaces import VolumeSpace
from pavi_parcel.spaces.gifti import gifti_dseg, gifti_probseg, save_image

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
VALUES = st.text(alphabet=ALNUM, min_size=1, max_size=8)
KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=5).filter(
    lambda k: k not in ("suffix", "extension"))
EXTENSIONS = st.sampled_from(["", ".nii.gz", ".nii", ".func.gii", ".label.gii", ".tsv", ".json", ".h5"])
SLOW = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=150, deadline=None)
BASE = ["bids_dir=/data/ds", "out_dir=/data/out"]


# --------------------------------------------------------------------------- BIDS names
@given(st.dictionaries(KEYS, VALUES, min_size=1, max_size=6), st.one_of(st.just(""), VALUES), EXTENSIONS)
def test_build_then_parse_gives_back_the_entities(entities, suffix, extension):
    name = build_name(entities, suffix, extension)
    parsed = parse_entities(name)
    assert parsed == {**entities, "suffix": suffix, "extension": extension}
    assert list(parsed)[:len(entities)] == list(entities)                  # file-name order kept
    assert parse_entities(f"/some/folder/{name}") == parsed                  # folders are ignored


@given(st.text(alphabet=ALNUM + "-_.", max_size=40))
@example("0-0._")  # an underscore after the first dot once parsed as part of the extension
def test_any_name_that_parses_is_rebuilt_exactly(name):
    parsed = parse_entities(name)
    if parsed:
        assert build_name(parsed, parsed["suffix"], parsed["extension"]) == name
        assert all(k and v for k, v in parsed.items() if k not in ("suffix", "extension"))
        assert "_" not in "".join(parsed.values()) and "." not in parsed["suffix"]


@given(VALUES, st.sampled_from(["sub", "ses", "task", "run"]))
def test_normalize_label_strips_the_prefix_once(label, prefix):
    assert normalize_label(f"{prefix}-{label}", prefix) == label
    assert normalize_label(f"  {label} ", prefix) == label
    assert normalize_label(normalize_label(f"{prefix}-{label}", prefix), prefix) == label


# --------------------------------------------------------------------------- command line
TOKENS = st.one_of(VALUES, st.sampled_from(["--participant-label", "--participant_label", "--space", "-m",
                                             "fit", "model.n_networks=7", "--participant-label=05", "sub-01"]))


@given(st.lists(TOKENS, max_size=12))
def test_multi_value_expansion_keeps_every_value_in_order_and_is_idempotent(argv):
    out = expand_multi_value_options(argv)
    flat_in = [part for tok in argv for part in (tok.split("=", 1) if tok.split("=", 1)[0] in MULTI_VALUE_OPTIONS
                                                  else [tok])]
    assert [t for t in out if t not in MULTI_VALUE_OPTIONS] == [t for t in flat_in if t not in MULTI_VALUE_OPTIONS]
    assert expand_multi_value_options(out) == out


@SLOW
@given(st.lists(st.text(alphabet=ALNUM + " -_,.'\"[]{}=:\\/", min_size=1, max_size=10), min_size=1, max_size=3))
def test_quoted_labels_survive_compose(labels):
    assume(all(label.strip() == label for label in labels))
    items = ",".join(quote(label) for label in labels)
    cfg = compose(BASE + [f"participant_label=[{items}]"])
    assert list(cfg.participant_label) == labels


@SLOW
@given(st.integers(min_value=-5, max_value=10**6))
def test_n_networks_is_accepted_exactly_when_at_least_two(k):
    if k >= 2:
        assert compose(BASE + [f"model.n_networks={k}"]).model.n_networks == k
    else:
        with pytest.raises(BadInputError, match="model.n_networks"):
            compose(BASE + [f"model.n_networks={k}"])


@SLOW
@given(st.floats(allow_nan=True, allow_infinity=True, width=32))
def test_learning_rate_is_accepted_exactly_when_positive_and_finite(lr):
    text = repr(float(lr))
    if math.isfinite(lr) and lr > 0:
        assert compose(BASE + [f"fit.lr={text}"]).fit.lr == pytest.approx(float(lr))
    else:
        with pytest.raises(BadInputError, match="fit.lr"):
            compose(BASE + [f"fit.lr={text}"])


@SLOW
@given(st.sampled_from(["fit.batch_subjects", "fit.batch_vertices", "fit.max_steps", "ingest.min_frames",
                        "ingest.fd_threshold", "fingerprints.top_fraction", "n_jobs"]),
       st.one_of(st.integers(-3, 3000), st.floats(-2, 2, allow_nan=False), st.sampled_from(["abc", "true", "null"])))
def test_numeric_settings_reject_wrong_types_and_ranges_by_name(key, value):
    try:
        cfg = compose(BASE + [f"{key}={value}"])
    except BadInputError as exc:
        assert key in exc.message and "Fix:" in exc.message
        return
    stored = cfg
    for part in key.split("."):
        stored = getattr(stored, part)
    assert stored == value and not isinstance(stored, (bool, str))


@SLOW
@given(st.sampled_from(["model.not_a_key", "fit.lr_typo", "ingest.strategies", "exprot.format"]),
       st.integers(0, 9))
def test_unknown_keys_are_named(key, value):
    with pytest.raises(BadInputError, match=f"Unknown configuration key '{key}'"):
        compose(BASE + [f"{key}={value}"])


_BASE_CFG = []


def base_config() -> dict:
    if not _BASE_CFG:
        from pavi_parcel.settings.compose import compose_config

        _BASE_CFG.append(compose_config(BASE))
    return _BASE_CFG[0]


NUMERIC_RULES = {  # key: (is_int, low, low_inclusive, high)
    "model.n_networks": (True, 2, True, None), "fit.batch_subjects": (True, 1, True, None),
    "fit.batch_vertices": (True, 1, True, None), "fit.max_steps": (True, 1, True, None),
    "fit.lr": (False, 0, False, None), "fit.tol": (False, 0, True, None),
    "fingerprints.top_fraction": (False, 0, True, 1), "ingest.min_frames": (True, 3, True, None),
    "ingest.fd_threshold": (False, 0, False, None), "seed": (True, 0, True, None),
}


@MANY
@given(st.sampled_from(sorted(NUMERIC_RULES)),
       st.one_of(st.integers(-10, 10**7), st.floats(allow_nan=True, allow_infinity=True),
                 st.booleans(), st.none(), st.text(max_size=4)))
def test_every_value_is_judged_by_its_documented_rule(key, value):
    """The settings schema accepts a value exactly when it has the key's type and range."""
    import copy

    from pavi_parcel.settings.rules import collect
    from pavi_parcel.settings.schema import RunSettings

    cfg = copy.deepcopy(base_config())
    *groups, leaf = key.split(".")
    node = cfg
    for group in groups:
        node = node[group]
    node[leaf] = value
    is_int, low, inclusive, high = NUMERIC_RULES[key]
    typed = isinstance(value, int) if is_int else isinstance(value, (int, float)) and math.isfinite(value)
    typed = typed and not isinstance(value, bool)
    valid = typed and (value >= low if inclusive else value > low) and (high is None or value < high)
    problems = [p for p in collect(RunSettings, cfg)[1] if key in p.message]
    assert (not problems) == valid, (key, value, [p.message for p in problems])
    for problem in problems:
        assert problem.message.startswith("Invalid") and "Fix: set" in problem.message


# --------------------------------------------------------------------------- export writers
@st.composite
def probabilities(draw, max_vertices=40):
    k = draw(st.integers(2, 8))
    n = draw(st.integers(1, max_vertices))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(k, draw(st.sampled_from([0.05, 1.0, 20.0]))), size=n).astype(np.float32)
    return probs


@SLOW
@given(probabilities(), st.sampled_from(["L", "R"]))
def test_gifti_maps_reload_equal_with_labels_in_0_to_k(probs, hemi):
    n, k = probs.shape
    table = default_table(k)
    full = to_full_space(probs, np.arange(1, n + 1), n + 3, 0.0)           # vertex 0 and 2 more: medial wall
    labels = to_full_space(hard_labels(probs), np.arange(1, n + 1), n + 3, 0)
    with tempfile.TemporaryDirectory() as tmp:
        structure = {"L": "CortexLeft", "R": "CortexRight"}[hemi]
        soft = save_image(gifti_probseg(full, table.names, structure), Path(tmp) / "p.func.gii")
        hard = save_image(gifti_dseg(labels, table.names, table.colors, structure), Path(tmp) / "d.label.gii")
        again = save_image(gifti_dseg(labels, table.names, table.colors, structure), Path(tmp) / "e.label.gii")
        back = np.stack([d.data for d in nib.load(soft).darrays], axis=1)
        img = nib.load(hard)
        back_labels = img.darrays[0].data
        keys = sorted(img.labeltable.get_labels_as_dict())
        assert hard.read_bytes() == again.read_bytes()                      # deterministic bytes
    np.testing.assert_array_equal(back, full)
    np.testing.assert_array_equal(back_labels, labels)
    assert back_labels.min() >= 0 and back_labels.max() <= k and back_labels[0] == 0
    assert keys == list(range(k + 1))
    np.testing.assert_array_equal(back_labels[1:n + 1], np.argmax(probs, axis=1) + 1)


@SLOW
@given(probabilities(max_vertices=60), st.sampled_from([(4, 5, 3), (3, 3, 7)]), st.floats(0.5, 4.0))
def test_nifti_maps_reload_equal_on_the_grid(probs, grid, voxel):
    n_total = int(np.prod(grid))
    probs = probs[:n_total]
    n, k = probs.shape
    rng = np.random.default_rng(n * 31 + k)
    index = np.sort(rng.choice(n_total, size=n, replace=False))
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 2.5]
    space = VolumeSpace("MNI152NLin2009cAsym", grid, affine)
    full = to_full_space(probs, index, n_total, 0.0)
    labels = to_full_space(hard_labels(probs), index, n_total, 0).astype(np.int16)
    with tempfile.TemporaryDirectory() as tmp:
        soft = nib.load(save_image(space.image(full), Path(tmp) / "p.nii.gz"))
        hard_path = save_image(space.image(labels, intent="label"), Path(tmp) / "d.nii.gz")
        hard = nib.load(hard_path)
        soft_data, hard_data = np.asarray(soft.dataobj), np.asarray(hard.dataobj)
        again = save_image(space.image(labels, intent="label"), Path(tmp) / "e.nii.gz")
        assert again.read_bytes() == hard_path.read_bytes()
    assert soft.shape == grid + (k,) and hard.shape == grid
    np.testing.assert_array_equal(soft_data.reshape(n_total, k), full)
    np.testing.assert_array_equal(hard_data.reshape(n_total), labels)
    np.testing.assert_allclose(soft.affine, affine)
    assert hard_data.min() >= 0 and hard_data.max() <= k
    assert set(np.unique(hard_data.reshape(n_total)[index])) <= set(range(1, k + 1))
