"""mfzoo's Hydra configs, shipped inside the package as `mfzoo.configs`."""
