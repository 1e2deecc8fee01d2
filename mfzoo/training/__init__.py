"""Training glue: the Lightning modules, the run (`mfzoo-train`), its run directory, callbacks,
checkpoint restore and the loading of a finished run."""
