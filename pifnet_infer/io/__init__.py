"""Rasters on disk: grid checks, band metadata, the raster Source/Sink, atomic output, :func:`fuse_geotiff`.

Modules: :mod:`~pifnet_infer.io.grids` (CRS, ratio, alignment; pure arithmetic),
:mod:`~pifnet_infer.io.bands` (1-based band selection, wavelengths, scale, nodata),
:mod:`~pifnet_infer.io.rasters` (open rasters; check or warp the MSI onto the HSI grid),
:mod:`~pifnet_infer.io.raster_io` (:class:`RasterSource`, :class:`RasterSink`),
:mod:`~pifnet_infer.io.atomic` (temporary file, rename on success) and
:mod:`~pifnet_infer.io.geotiff` (:func:`fuse_geotiff`). None of them imports
rasterio at import time.

.. versionadded:: 0.1
"""
