"""The workflow steps that work on pandas data: pipeline building, calibration, validation, metrics."""
