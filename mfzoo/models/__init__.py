"""Models: biased MF and FunkSVD, SVD++, timeSVD(++), MF with side features, Bayesian MF,
and the model contract (`mfzoo.models.contract`)."""
