"""Geometry primitives: the floor every stage builds on (numpy only, no meshforge imports).

``normals`` (face and vertex normals), ``tangents`` (per-vertex tangent frames in the glTF convention),
``topology`` (edge counts, welding, components), ``closest`` (closest point on triangles), ``raster``
(UV-space rasterisation, atlas utilisation) and ``texture`` (bilinear sampling). ``mesh`` (the finishing
stages), ``fields``, ``export``, ``io`` and ``eval`` import from here; nothing here imports them.
"""
