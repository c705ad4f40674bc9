"""run_pipeline's keywords: options and settings by name become the overrides the command line builds."""

from __future__ import annotations

import pytest

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.settings.compose import compose
from pavi_parcel.workflows.api import pipeline_overrides


def test_settings_by_name_go_to_their_group(tmp_path):
    items = pipeline_overrides(tmp_path / "bids", tmp_path / "out", participant_label=["01", "sub-02"],
                               space="MNI152NLin6Asym", n_networks=7, potts_beta=0.5, max_minutes=2,
                               fd_threshold=0.4, top_fraction=0.2, reference="yeo7", seed=3,
                               strategy=["motion", "scrub"], sessions=None, overrides=["fit.lr=0.01"])
    settings = compose(items)
    assert settings.participant_label == ("01", "sub-02") and settings.data.space == "MNI152NLin6Asym"
    assert settings.model.n_networks == 7 and settings.model.potts_beta == 0.5 and settings.fit.max_minutes == 2
    assert settings.ingest.fd_threshold == 0.4 and settings.fingerprints.top_fraction == 0.2
    assert settings.export.reference == "yeo7" and settings.seed == 3 and settings.fit.lr == 0.01
    assert settings.ingest.strategy == ("motion", "scrub") and settings.data.sessions is None


def test_a_prior_sets_k_unless_given(tmp_path):
    assert compose(pipeline_overrides(tmp_path, tmp_path / "o", prior="yeo17")).model.n_networks == 17
    assert compose(pipeline_overrides(tmp_path, tmp_path / "o", prior="yeo17", n_networks=7)).model.n_networks == 7


def test_unknown_names_are_bad_input(tmp_path):
    with pytest.raises(BadInputError, match="Unknown setting pots_beta"):
        pipeline_overrides(tmp_path, tmp_path / "o", pots_beta=0.5)
