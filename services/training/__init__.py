"""Distributed retraining: a Ray Train job around hdm.training.train, publishing to the registry."""
