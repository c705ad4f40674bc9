"""pavi-parcel: individual probabilistic parcellations with Plate-Amortized Variational Inference."""

__version__ = "0.1.0"
