"""Scores of parcellations: ARI, Dice, calibration, homogeneity, held-out likelihood."""

from .scores import (
    adjusted_rand_index,
    dice_per_network,
    entropy_map,
    expected_calibration_error,
    heldout_log_likelihood,
    homogeneity,
    hungarian_match,
    mean_dice_after_matching,
    within_between_dice,
)

__all__ = ["adjusted_rand_index", "dice_per_network", "entropy_map", "expected_calibration_error",
           "heldout_log_likelihood", "homogeneity", "hungarian_match", "mean_dice_after_matching",
           "within_between_dice"]
