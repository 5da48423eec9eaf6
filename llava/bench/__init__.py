"""Cost measurements, separate from task accuracy: FLOPs (:mod:`.flops`)."""
