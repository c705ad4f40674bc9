"""Surface spaces: two hemispheres of one mesh, left then right, whatever the file format of the runs.

:class:`SurfaceSpace` holds what fsaverage (GIFTI) and fsLR (CIFTI) share: the hemisphere rows
of the full space, the mesh (found by the subclass), its triangles as Potts neighbours, the
inflated surfaces and sulcal depth of the figures, and the sphere. A space whose mesh is not at
hand still reads runs and writes maps; only what needs the mesh (:meth:`edges`,
:meth:`figure_meshes`, :meth:`sphere`) raises :class:`~.meshes.MeshUnavailable`, and
:meth:`mesh_note` says so in one line.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from .base import Hemisphere, Space
from .icosphere import face_edges
from .meshes import MeshFiles, MeshUnavailable, Surface

FIGURE_SURFACES = ("inflated", "very_inflated", "midthickness", "pial", "white")
"""Surfaces the figures are drawn on, the first found first."""


class SurfaceSpace(Space):
    """Both hemispheres of a mesh with ``n_hemi`` vertices each (full space: left rows, then right).

    Parameters
    ----------
    name : str
        The BIDS ``space`` label.
    n_hemi : int
        Vertices per hemisphere.
    mesh_dir : str or Path, optional
        A folder to look in first for the mesh (``data.mesh_dir``).
    """

    def __init__(self, name: str, n_hemi: int, mesh_dir: str | Path | None = None):
        self.name = name
        self.n_hemi = int(n_hemi)
        self.n_total = 2 * self.n_hemi
        self.mesh_dir = None if mesh_dir in (None, "") else str(Path(mesh_dir).expanduser().resolve())

    @property
    def hemispheres(self) -> tuple[Hemisphere, ...]:
        return (Hemisphere("L", "left", "CortexLeft", 0, self.n_hemi),
                Hemisphere("R", "right", "CortexRight", self.n_hemi, 2 * self.n_hemi))

    def to_attrs(self, attrs: Any) -> None:
        super().to_attrs(attrs)
        if self.mesh_dir is not None:
            attrs["mesh_dir"] = self.mesh_dir

    # ------------------------------------------------------------------ the mesh
    @abstractmethod
    def mesh_files(self) -> MeshFiles | None:
        """The files of this space's mesh, or None when none was found."""

    @abstractmethod
    def mesh_places(self) -> str:
        """Where the mesh is looked for, for messages."""

    def mesh(self) -> MeshFiles:
        """The mesh files; raises :class:`MeshUnavailable` naming where they were looked for."""
        found = self.mesh_files()
        if found is None:
            raise MeshUnavailable(f"No {self.name} mesh found", f"{self.n_hemi:,}-vertex surfaces per hemisphere "
                                  f"in {self.mesh_places()}", "none", "set data.mesh_dir=PATH to a folder holding "
                                  f"the {self.name} surfaces (FreeSurfer surf/, nilearn or TemplateFlow files)")
        return found

    def mesh_note(self) -> str | None:
        """One line for the log when the mesh is missing (what is skipped, how to fix it), else None."""
        if self.mesh_files() is not None:
            return None
        return (f"No {self.name} mesh found (looked in {self.mesh_places()}): fitting without the Potts "
                f"smoothness term and reporting without surface figures. Set data.mesh_dir=PATH to use one.")

    def surfaces(self, *kinds: str) -> dict[str, Surface]:
        """``{"left": Surface, "right": Surface}``: the first of ``kinds`` found for each hemisphere."""
        mesh = self.mesh()
        return {h.name: mesh.surface(h.label, *kinds) for h in self.hemispheres}

    def edges(self) -> np.ndarray:
        """Mesh edges of both hemispheres (full-space indices), shape (E, 2)."""
        return np.concatenate([face_edges(surface.faces, hemi.start)
                               for hemi, surface in zip(self.hemispheres, self.surfaces().values())])

    def sphere(self) -> dict[str, np.ndarray]:
        """Coordinates of the sphere surface of each hemisphere, float64 ``{"left": (n_hemi, 3), ...}``."""
        return {hemi: s.coordinates.astype(np.float64) for hemi, s in self.surfaces("sphere").items()}

    def figure_meshes(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Surfaces and sulcal depth of both hemispheres for the report's figures.

        Returns
        -------
        meshes : dict
            ``{"left": mesh, "right": mesh}`` (nilearn in-memory meshes).
        sulcal : dict
            ``{"left": ndarray (n_hemi,), "right": ...}``; zeros where no sulcal depth was found.
        """
        from nilearn.surface import InMemoryMesh

        mesh = self.mesh()
        surfaces = self.surfaces(*FIGURE_SURFACES)
        return ({h: InMemoryMesh(s.coordinates, s.faces) for h, s in surfaces.items()},
                {h.name: mesh.sulcal_depth(h.label, self.n_hemi) for h in self.hemispheres})

    def hemisphere_of(self, path: Path) -> str | None:
        return next((h.label for h in self.hemispheres if f"hemi-{h.label}_" in Path(path).name), None)


__all__ = ["FIGURE_SURFACES", "SurfaceSpace"]
