"""Planted structure beyond the labels: the Yeo 17 -> 7 nesting, coarsened truth, a planted sparse graph in the runs."""

from __future__ import annotations

import numpy as np

from pavi_parcel.simulate import simulate_dataset
from pavi_parcel.simulate.graph import load_planted_graph
from pavi_parcel.simulate.plan import group_plan, planted_parents
from pavi_parcel.simulate.truth import coarsened, load_nesting, load_truth


def test_yeo17_networks_nest_in_the_yeo7_networks_of_their_published_order():
    plan = group_plan("fsaverage5", 17, "auto", 0, 4)
    # Yeo et al. 2011: networks 1-2 visual, 3-4 somatomotor, 5-6 dorsal attention, 7-8 ventral attention,
    # 9-10 limbic, 11-13 frontoparietal, 14-17 default
    assert planted_parents(plan) == {7: [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 6, 7, 7, 7, 7]}
    assert planted_parents(group_plan("fsaverage5", 7, "auto", 0, 4)) == {}


def test_nesting_and_graph_are_written_with_the_truth_and_coarsen_it(tmp_path):
    sim = simulate_dataset(tmp_path, n_subjects=2, n_sessions=1, n_frames=40, n_networks=17, seed=0,
                           nesting_strength=1.0, graph_density=0.2, progress=False)
    parents = load_nesting(sim.truth_dir)[7]
    truth = load_truth(sim.truth_dir)
    coarse = coarsened(truth, parents)
    label = sim.subjects[0]
    fine = truth.subject_labels[label]
    assert coarse.n_networks == 7 and np.array_equal(coarse.subject_labels[label] == 0, fine == 0)
    assert np.array_equal(coarse.subject_labels[label][fine > 0], parents[fine[fine > 0] - 1])
    graph = load_planted_graph(sim.truth_dir)
    assert graph.subject_precision.shape == (2, 17, 17) and graph.edges.any()
    assert load_planted_graph(tmp_path / "nowhere") is None


def test_signal_labels_keep_wide_regions_and_lose_single_vertex_islands():
    from pavi_parcel.simulate.fmri import signal_labels
    from pavi_parcel.simulate.geometry import build_space

    sim = build_space("fsaverage5")
    west = sim.coords[:, 0] < 0
    labels = np.where(west, 1, 2).astype(np.int16)
    # one vertex of network 3 deep inside network 1: its neighbours outweigh it after the blur
    centre = int(np.flatnonzero(west)[np.argmin(sim.coords[west, 0])])
    labels[centre] = 3
    shown = signal_labels(sim, labels)
    assert shown[centre] == 1
    interior = west & (sim.coords[:, 0] < -20)
    interior[centre] = False
    assert np.all(shown[interior] == 1) and np.all(shown[sim.coords[:, 0] > 20] == 2)


def test_noise_smoothness_sets_how_much_neighbours_share_the_noise():
    from pavi_parcel.simulate.fmri import make_subject, simulate_run
    from pavi_parcel.simulate.layout import rng_for

    plan = group_plan("fsaverage5", 7, "auto", 0, 4)
    model = make_subject(plan.sim, plan.bank, plan.group, plan.factors, rng_for(0, 1))
    shared = {}
    for steps in (0, 2):  # noise only: a tiny SNR, no motion; the same random draws for both
        data = simulate_run(plan.sim, model, plan.factors, 120, 2.0, rng_for(0, 2), snr=1e-4, motion_scale=0,
                            noise_smoothness=steps).data[2:]
        x = (data - data.mean(0)) / data.std(0)
        neighbours = (plan.sim.smoother @ x.T).T  # self included: 1 / (degree + 1) of it
        shared[steps] = float(np.mean(np.sum(x * neighbours, axis=0)) / len(x))
    assert shared[0] < 0.25 and shared[2] > 0.7  # measured: 0.14 and 0.81
