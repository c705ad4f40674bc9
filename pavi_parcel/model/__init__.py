"""The hierarchical parcellation model (MS-HBM family), its PAVI guide and the baselines."""
