"""Noise2Noise training pairs and the noise they carry.

``halves`` loads independent noisy halves of each micrograph (even/odd sums of a dataset
directory, two folders, or movies split by frame parity); ``single`` makes a pair from one
micrograph when no frames exist; ``noise`` measures the noise level and spectrum from the
data itself; ``crops`` cuts matching, identically augmented training crops.
"""
