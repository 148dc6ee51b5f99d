"""Objective, trainer, callbacks and the run that ties them to a folder."""
