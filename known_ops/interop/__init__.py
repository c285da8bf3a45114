"""Conversions to and from the tools CT researchers already use: ASTRA, ODL and PYRO-NN.

Each submodule imports its package only when one of its functions is called, so ``import
known_ops`` and ``import known_ops.interop`` never need them. See ``docs/interop.md`` for the
conventions and the pitfalls each conversion takes care of.

- :mod:`known_ops.interop.astra`: ``to_astra``, ``from_astra`` (volume and projection geometry
  dictionaries) and the array conversions ``image_to_astra`` / ``image_from_astra`` (2D row flip)
  and ``projections_to_astra`` / ``projections_from_astra`` (3D axis order).
- :mod:`known_ops.interop.odl`: ``to_odl`` (an ``odl.Operator`` with the adjoint of ODL's weighted
  spaces), ``from_odl`` (our volume and geometry from an ODL ray transform, or a space and a geometry),
  ``geometry_to_odl`` and the array conversions (ODL's axes are ``(x, y[, z])``).
- :mod:`known_ops.interop.pyronn`: ``from_pyronn`` (PYRO-NN's parallel, fan and cone geometry
  objects) and ``to_pyronn_matrices``.
"""
from .astra import (
    from_astra,
    image_from_astra,
    image_to_astra,
    projections_from_astra,
    projections_to_astra,
    to_astra,
)
from .odl import (
    from_odl,
    geometry_from_odl,
    geometry_to_odl,
    projections_from_odl,
    projections_to_odl,
    space_from_volume,
    to_odl,
    volume_from_odl,
    volume_from_space,
    volume_to_odl,
)
from .pyronn import from_pyronn, to_pyronn_matrices

__all__ = ["to_astra", "from_astra", "image_to_astra", "image_from_astra", "projections_to_astra",
           "projections_from_astra", "to_odl", "from_odl", "geometry_from_odl", "geometry_to_odl", "space_from_volume",
           "volume_from_space", "volume_to_odl", "volume_from_odl", "projections_to_odl", "projections_from_odl",
           "from_pyronn", "to_pyronn_matrices"]
