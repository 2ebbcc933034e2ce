"""The trained networks: the segment decoder (:mod:`~odbench.models.decoder`), the end-to-end
segmenters (:mod:`~odbench.models.segmenters`) and :func:`~odbench.models.build.build_model`.
Methods (:mod:`odbench.methods`) and training (:mod:`odbench.training`) use them; they import
neither."""
