"""The MS-HBM and its variational families: tensors and arrays only (vMF, hierarchy, guides, labels, Potts)."""
