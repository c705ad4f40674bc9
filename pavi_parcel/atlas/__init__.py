"""Reference atlases (Yeo 2011 and user files), atlas priors, and network names and colours."""

from .naming import LabelTable, load_reference, read_label_table, write_label_table
from .priors import AtlasPrior, load_prior, prior_problems
from .references import Atlas, load_atlas, load_yeo

__all__ = ["Atlas", "AtlasPrior", "LabelTable", "load_atlas", "load_prior", "load_reference", "load_yeo",
           "prior_problems", "read_label_table", "write_label_table"]
