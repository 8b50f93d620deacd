"""Offline work on recorded stacks: many inputs, frame chunks, one process or a Dask cluster.

* :mod:`~smartscope.batch.stacks`: inputs (TIFF / OME-TIFF files, globs, run folders,
  OME-Zarr) found and read lazily, a few frames at a time;
* :mod:`~smartscope.batch.cluster`: ``--cluster`` (``none``, ``local[:N]``, a scheduler
  address, ``slurm[:N]``) turned into a Dask client, GPU workers declared as resources;
* :mod:`~smartscope.batch.jobs`: frame chunks, their part files, retries and failures,
  and the per-process cache that keeps each worker's engine open;
* :mod:`~smartscope.batch.apply`: ``smartscope apply`` (any engine bundle over stacks).

``smartscope localize`` (``smartscope.models.smlm.batch``) uses the same pieces.
"""
